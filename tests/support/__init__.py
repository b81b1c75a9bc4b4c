"""Helpers shared by tests and benchmarks (cluster harness, generated clusters,
reference-tool runners); holds no tests.
"""
