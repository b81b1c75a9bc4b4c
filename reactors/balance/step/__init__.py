"""The balancer's step finders: each finds the next move at the current placement,
the one that lowers the cluster score most within the rules. `search` (the fast one:
bounds ranked over `sides` and `batch`, exact `deltas`, node figures as `arrays`),
`exact` (the plain step, for utilisation weights and desired locations) and
`lookahead` (a step weighed with the best move after it). Pure: no I/O, no logging,
no processes or threads (`reactors.balance.cores` runs them in workers); must not
change the cluster or fold a plan.
"""
