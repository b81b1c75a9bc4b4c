"""corral's vocabulary and record: typed ids, specs, events, their codec, the etcd
event store and the pure fold of events into ClusterState.

Imports nothing from `reactors` or `orchestrator` (see the import-linter contracts).
"""
