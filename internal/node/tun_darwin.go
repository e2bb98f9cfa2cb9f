package node

// tunNeeds is what creating a kernel TUN device needs here.
const tunNeeds = "kernel mode needs root on macOS (a utun device, configured with ifconfig and route)"
