package node

// tunNeeds is what creating a kernel TUN device needs here.
const tunNeeds = "kernel mode needs root or CAP_NET_ADMIN and /dev/net/tun"
