"""Real nodes and guests for tests: node VMs under qemu, a tiny guest, a real node
account with sshd and sudo, and what the node helper makes of requests."""
