"""Real node VMs for tests and `make e2e`: the node image, the VMs, their fence agent."""
