"""Tests against simulated nodes over real SSH and a real etcd."""
