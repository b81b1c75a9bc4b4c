"""The Ganeti RAPI v2 face: HTTPS server, Ganeti users file, integer job ids, and the
folded state in Ganeti's shapes. Must not act on nodes; writes go through
`orchestrator.operations`.
"""
