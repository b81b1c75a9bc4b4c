"""Benches of the event log: the store's speed, how to speak TLS to etcd, the log at a
million events and its budget against etcd's quota."""
