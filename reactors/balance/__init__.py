"""The balancer (what hbal does): the plan over the step finders (`step`, the search
for moves that lower Ganeti's cluster score, its bounds and exact deltas), folding a
plan's moves, node groups, rounds and the jobs of a move, why instances stay, and the
worker processes that run searches on several cores. Pure but for `cores`, which
only starts processes; must not change the cluster.
"""
