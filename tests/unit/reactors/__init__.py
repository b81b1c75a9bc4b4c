"""Pure tests of the reactors: the instance and heal planners on hand-built states, and
the loops' cancellation and waits at a term's end."""
