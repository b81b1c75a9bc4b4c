"""Tests against real node VMs under qemu (`make e2e`)."""
