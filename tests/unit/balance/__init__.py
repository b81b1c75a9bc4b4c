"""Pure tests of the balancer (hbal) and the array allocator behind `corral capacity`:
each fast path against a plainer or brute-force version of itself, on generated clusters."""
