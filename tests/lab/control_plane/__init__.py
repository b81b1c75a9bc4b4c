"""Lab tests of the control plane: several orchestrators and their leader terms, etcd
losing its quorum, the orchestrator killed mid-operation, and the log outliving etcd."""
