"""Reaching nodes: the node command catalog (pure builders and parsers), the SSH node
operations, QMP and fence agents. Must not decide anything.
"""
