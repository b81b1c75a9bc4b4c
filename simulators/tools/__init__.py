"""The node tools a simulated host answers, with the real tools' argv, output
formats, error texts and exit codes, one module per family over the `registry`
(argv[0] -> the function answering it): `files` (host facts and the file commands),
`lvm`, `drbd` (DRBD 9 or 8.4 per host), `processes` (qemu, pgrep, kill), `net`
(iproute2's `ip`), `images` (sha256sum, qemu-img, curl), and `osdef` (a Ganeti OS
definition's scripts, which the node helper runs with their own environment, not
through the registry). The node shell imports them all, so that each registers its
commands.

No I/O: they operate on `simulators.fabric` state. Imports nothing from corral's
own packages.
"""
