"""Chaos runs: random fault schedules, the control-plane faults, and the invariants
checked after every step (including the leader terms read from etcd)."""
