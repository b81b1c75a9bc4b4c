"""The resync skips instances whose plan inputs are unchanged since their last
converged pass, and reconciliation stays level-triggered: with the workers deaf
to events (every edge missed) and no full resync in sight, a VM killed behind
corral's back (its instance record untouched) is still started again, by the
resync alone, on its primary; the check reads the simulated host."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from events.model import instance_key
from tests.support.cluster.cluster_harness import FAST, cluster, instances


async def test_a_missed_edge_is_repaired_by_the_resync_that_skips(tmp_path: Path) -> None:
    settings = replace(FAST, full_resync_interval_s=3600.0)
    async with cluster(tmp_path, settings=settings) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(6))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=90)
        workers = engine.workers
        # Settled instances are skipped by the resync (the skip is in force).
        skipped = workers.skipped
        await c.wait_for("a resync skipping", lambda: workers.skipped > skipped, timeout=10)
        # Every edge missed from now on: the workers hear of no event.
        engine.ctx._term_listeners.remove(workers.on_event)
        name = sorted(engine.state.placements)[0]
        host = engine.state.placements[name].primary
        record = engine.state.versions[instance_key(name)]
        c.lab.fabric.kill_vm(host, name)
        await c.wait_for(
            "the probe to report the VM gone",
            lambda: name not in {vm.name for vm in engine.state.observed[host].vms},
            timeout=10,
        )
        assert engine.state.versions[instance_key(name)] == record  # the record unchanged
        await c.wait_for(f"{name} started again", lambda: c.running_on(name) == [host], timeout=20)
        # The other instances stayed as they were.
        for other in sorted(engine.state.placements):
            if other != name:
                assert c.running_on(other) == [engine.state.placements[other].primary]
