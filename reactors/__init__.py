"""Deciding and acting: pure planning (placement, score, step plans, node command
builders and parsers) and the async loops that carry plans out over SSH.
"""
