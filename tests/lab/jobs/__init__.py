"""Lab tests of jobs: operations, node evacuation, a job's recorded decisions, live
migration's fallback and guard, and instances held by a job."""
