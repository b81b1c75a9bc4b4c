"""The cluster as Ganeti's htools see it: the model, Ganeti's cluster score and N+1
check, and the htools text format. Pure: no I/O, no logging.
"""
