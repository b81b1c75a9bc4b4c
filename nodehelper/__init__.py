"""corral's node helper: the one program the orchestrator runs as root on a node
(`sudo -n /usr/local/lib/corral/corral-node-helper VERB ...`), with fixed verbs
that validate their own arguments and build every config file and command line
themselves. Deployed as one file built from these modules (`nodehelper.bundle`).

Standard library only, and imports nothing from corral: the product never
imports it; the simulators run it in process against simulated nodes.
"""
