"""Ganeti's htools as the reference: running `hbal`, `hinfo` and `hail` and reading what
they print, and the corpus of files they made."""
