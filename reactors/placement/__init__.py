"""Placement planning: the allocator (hail's answer), score deltas, pair scores at array
speed, capacity (hspace), evacuation and reboot groups (hroller), what-if states.
Pure: no I/O, no logging.
"""
