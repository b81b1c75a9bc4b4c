"""`corral instance|node|job ...`: the object command groups (`commands`), the
parsers every one of them builds (`node_parsers`, cheap to import), and what some
of them run: the serial console, device changes, node set-up, and the job reports
every recording command prints (`jobs`). Must not act on nodes, except the console
relay and the SSH connection of `node add|check`.
"""
