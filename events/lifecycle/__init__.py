"""The event log's life past the store: audit seals and the keys that sign them,
checkpoints of the fold, and retention (archiving old sealed events, then
compacting etcd). Built over events.store and events.archive; nothing below
them imports this package. Must not fold or decide anything about the cluster.
"""
