"""A real node for the test suite: kubelet, containerd, runc, CNI, kube-proxy and CoreDNS as local processes."""
