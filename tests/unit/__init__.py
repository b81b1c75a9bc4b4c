"""Pure tests: no etcd, no SSH, no real tools."""
