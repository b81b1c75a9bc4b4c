"""Benches of a whole corral on a simulated cluster: convergence from empty, heal, heal
at size, leadership handover, and the simulator's own scale."""
