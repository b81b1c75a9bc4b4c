"""Lab tests of the faces as clients use them: the native API and its OpenAPI document,
the CLI, Ganeti's RAPI client, a flood of plan requests and `corral apply --wait`."""
