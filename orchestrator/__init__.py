"""The process and its faces: settings and wiring, CLI, desired-state files, HTTP API.

Top layer: may import `reactors` and `events`; nothing imports it.
"""
