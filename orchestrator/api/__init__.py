"""The native HTTP API (aiohttp): tokens and roles, read and write routes, the event
stream, `/metrics`, the OpenAPI document and the static dashboard. Must not act on
nodes; writes go through `orchestrator.operations`.
"""
