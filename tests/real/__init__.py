"""Tests that run real tools: drbdadm, qemu, Chromium."""
