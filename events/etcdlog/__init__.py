"""The event store's parts below `events.store`: the order index's key layout, the
paged and point reads of the log, the subscription, member moves, group commit and
the store's errors. Only `events.store` puts them together; nothing here writes
events.
"""
