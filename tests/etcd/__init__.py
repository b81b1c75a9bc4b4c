"""Tests against a real etcd started per test: the store, seals, the demo's signals,
`corral serve`.
"""
