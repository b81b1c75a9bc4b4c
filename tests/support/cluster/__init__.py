"""A whole corral for tests and benches: the cluster harness (etcd, simulated hosts,
the engine), a lab in its own process, desired-state files and events, a transport that
reaches no node, and a private S3 server."""
