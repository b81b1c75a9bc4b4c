"""Lab tests of self-healing: node loss, a second loss before re-protection, the
orchestrator cut off, and random fault schedules."""
