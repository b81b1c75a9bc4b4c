"""The `corral` command line: one module per group of subcommands over a shared context
(target etcd, actor, folded state, output). Must not hold cluster logic of its own.
"""
