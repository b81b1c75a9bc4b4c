"""Differential tests against Ganeti's htools (hinfo, hbal, hail, hspace, hroller)."""
