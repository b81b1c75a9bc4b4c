"""Level-triggered planning of one instance's next steps and of self-healing after node
loss, as pure functions of the folded state. Pure: no I/O, no logging, no clocks.
"""
