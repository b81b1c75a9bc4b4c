"""Whether a live migration may begin: every disk of the instance connected
between its primary and secondary with both copies UpToDate, as the nodes last
reported. Promoting the secondary of a pair that is not connected makes two
primaries that cannot see each other: both copies change, and the pair comes
back a split brain (make chaos seeds 107 and 115: a migration submitted right
after the pair's link was cut). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from events.ids import NodeName
from events.state import NodeObservation
from reactors.plans.queries import drbd_on
from reactors.plans.steps import DiskConfig

UP_TO_DATE = "UpToDate"


def migration_blockers(
    *,
    configs: Iterable[DiskConfig],
    p: NodeName,
    s: NodeName,
    p_obs: NodeObservation | None,
    s_obs: NodeObservation | None,
) -> list[str]:
    """Why the disks cannot carry a live migration from `p` to `s` now (empty:
    they can)."""
    why = []
    for cfg in configs:
        for node, obs, peer in ((p, p_obs, s), (s, s_obs, p)):
            res = drbd_on(obs, cfg.resource)
            if res is None:
                why.append(f"{cfg.resource} is not up on {node}")
                continue
            link = next((pe for pe in res.peers if pe.peer == peer), None)
            if link is None or link.connection != "Connected":
                state = link.connection if link else "no link"
                why.append(f"{cfg.resource} on {node} is not connected to {peer} ({state})")
            elif res.disk != UP_TO_DATE or link.peer_disk != UP_TO_DATE:
                why.append(
                    f"{cfg.resource} is not in sync ({node} {res.disk}, {peer} {link.peer_disk})"
                )
    return why
