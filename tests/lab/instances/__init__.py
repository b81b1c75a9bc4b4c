"""Lab tests of an instance's life: coming up mirrored and running, changes after
creation (hotplug, hypervisor parameters, memory and vCPUs, rename), OS installs and
their seeds, and creation while stopped."""
