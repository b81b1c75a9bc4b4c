"""Simulated nodes: real SSH servers answering the real node tools' argv with the
real tools' output formats, plus the fabric (DRBD links, power, partitions).

Must not import `orchestrator`, `reactors` or `events`: it only speaks SSH, so tests
that drive it through corral prove something.
"""
