package node

// tunNeeds is what creating a kernel TUN device needs here.
const tunNeeds = "kernel mode needs Administrator rights and wintun.dll (from www.wintun.net, for this architecture) beside tomoe.exe"
