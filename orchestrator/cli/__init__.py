"""The `corral` command line: the entry point (`main`), one module or subpackage per
command family (`objects` for instance/node/job, `planning` for balance, capacity,
export and reboot-plan, then desired state, events and audit, status, serve) over a
shared context (target etcd, actor, folded state, output). Must not hold cluster
logic of its own.
"""
