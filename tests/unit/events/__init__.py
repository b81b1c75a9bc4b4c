"""Pure tests of the record: the codec and the fold, validation at every entry point,
following the log, and a node loss read back from its events."""
