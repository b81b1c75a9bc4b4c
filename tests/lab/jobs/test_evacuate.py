"""`corral node evacuate` as a user runs it: the plan first, then the job; the node
ends with no primaries and no secondaries (checked on the simulated host), every
instance redundant and converged, N+1 intact, and the placements the plan said."""

from __future__ import annotations

import json
from pathlib import Path

from reactors.htools.model import from_state
from reactors.htools.score import n1_failures
from tests.support.cluster.cluster_harness import cluster, instances


async def test_evacuate_plans_then_empties_the_node(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.declare_nodes()
        await c.declare_instances(instances(12))
        engine = await c.start_engine()
        await c.wait_for("converged", c.converged, timeout=90)
        node = "node2"
        before = {str(n): (p.primary, p.secondary) for n, p in engine.state.placements.items()}
        assert any(node in pair for pair in before.values())

        planned = await c.corral("node", "evacuate", node, "--plan", "--json")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        doc = json.loads(planned.stdout)
        assert not doc["refused"] and not doc["n1_failures_after"]
        predicted = dict(before)
        for m in doc["moves"]:
            predicted[m["instance"]] = (m["new_primary"], m["new_secondary"])
        assert all(node not in pair for pair in predicted.values())
        assert {
            str(n): (p.primary, p.secondary) for n, p in engine.state.placements.items()
        } == before

        done = await c.corral("node", "evacuate", node, "--wait", "--reason", "new RAM")
        assert done.returncode == 0, done.stdout + done.stderr
        await c.wait_for("converged again", c.converged, timeout=120)
        state = engine.state
        after = {str(n): (p.primary, p.secondary) for n, p in state.placements.items()}
        assert after == predicted
        assert state.desired.nodes[node].drained  # type: ignore[index]
        host = c.lab.host(node)
        await c.wait_for(
            "nothing left on the node",
            lambda: not host.vms and not host.copies and not host.volumes,
            timeout=60,
        )
        for name, (p, s) in after.items():
            assert c.running_on(name) == [p]
            for holder in (p, s):
                assert c.lab.host(holder).copies[f"{name}-d0"].disk == "UpToDate"
        assert not n1_failures(from_state(state=state))
