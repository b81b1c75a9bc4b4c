"""How the benches measure: corral compiled to bytecode before it is timed, a child
process's wall and CPU time, and py-spy samples of where the time goes."""
