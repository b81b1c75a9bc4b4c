"""Pure tests of the desired-state file: the loader and its problems, the image
catalogue and cloud-init, NIC addressing and generated MACs."""
