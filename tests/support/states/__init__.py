"""Cluster states built in process, pure: generated clusters (htools model and folded
states), a converged cluster of any size, and small hand-built states for planner tests."""
