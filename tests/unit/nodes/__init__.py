"""Pure tests of the node side: the node helper on a simulated host, the requests the
orchestrator sends it, DRBD status parsing, node checks, fencing and the simulated tools' output."""
