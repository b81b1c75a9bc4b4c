"""The field rules every entry point shares: what a node or instance name, a tag, a
size, a NIC, an address or a fence option may be. Each is an `Annotated` type whose
pydantic validator gives corral's own message, so a desired-state file, a native API
body, a RAPI body and an event decoded from etcd are held to one rule, and the
OpenAPI document is generated from the same types. One module per concern.

Pure: no I/O, no logging.
"""
