"""Deciding and acting: pure planning (placement, score, step plans, node command
builders and parsers) and the async loops that carry plans out over SSH.

Comes after `events` (reads the projection, appends events) and before
`orchestrator` (which wires the loops into a process).
"""
