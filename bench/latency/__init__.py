"""Benches of one request's cost: the API's latency at 2,000 instances and the node
helper's per command."""
