"""Desired-state files: the YAML format checked field by field, the difference from the
live desired state, and `corral plan`'s preview. Pure: no I/O beyond reading the file
in `load_desired`, no logging.
"""
