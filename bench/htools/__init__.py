"""Benches of corral against Ganeti's htools: allocation against hail, balancing against
hbal and capacity against hspace, on generated clusters and on the corpus htools made."""
