"""Lab tests of the nodes themselves: the simulated hosts and their DRBD model against
the real tools' outputs, and the node helper behind real SSH."""
