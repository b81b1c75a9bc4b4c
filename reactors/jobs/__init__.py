"""The job runner and the jobs it carries out: queued operations (start, stop, reboot,
failover, live migration, replace-disks, grow-disk, modify, rename, hotplug,
reinstall, node migrate/failover/evacuate), one job per object at a time, each with
its status and a per-step log recorded as JobUpdated events. Must not run a node
command that its job's log does not name first.
"""
