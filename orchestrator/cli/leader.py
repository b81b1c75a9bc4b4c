"""`corral cluster leader`: which orchestrator leads, under which term and since
when, and which stand by (read from etcd's leader key and the members' keys).

Read-only: appends nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from events.election import LeaderRecord, Member, read_leadership
from orchestrator.cli.context import open_store, print_json, target_from_args


def leadership_dict(
    leader: LeaderRecord | None, members: list[Member], *, now: float
) -> dict[str, Any]:
    def one(m: Member) -> dict[str, Any]:
        return {"id": m.id, "host": m.host, "pid": m.pid, "api": m.api, "started": m.started}

    return {
        "leader": (
            {
                **one(leader.member),
                "term": leader.term,
                "since": leader.since,
                "for_s": round(max(0.0, now - leader.since), 1),
            }
            if leader is not None
            else None
        ),
        "standbys": [one(m) for m in members if leader is None or m.id != leader.member.id],
    }


def render_leadership(d: dict[str, Any]) -> str:
    lines = []
    lead = d["leader"]
    if lead is None:
        lines.append(
            "leader    none: no orchestrator holds the leader key (none running, "
            "or etcd has no quorum); nothing acts on the nodes"
        )
    else:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lead["since"]))
        api = f"  api {lead['api']}" if lead["api"] else ""
        lines.append(
            f"leader    {lead['id']} (host {lead['host']}, pid {lead['pid']})  term "
            f"{lead['term']}  since {since} ({lead['for_s']:.0f}s){api}"
        )
    if d["standbys"]:
        for i, m in enumerate(d["standbys"]):
            api = f"  api {m['api']}" if m["api"] else ""
            head = "standbys" if i == 0 else ""
            lines.append(f"{head:<9} {m['id']} (host {m['host']}, pid {m['pid']}){api}")
    else:
        lines.append("standbys  none: if the leader's host dies, nothing takes over")
    return "\n".join(lines)


async def _read(args: argparse.Namespace) -> tuple[LeaderRecord | None, list[Member]]:
    async with open_store(target_from_args(args)) as store:
        return await read_leadership(store)


def run_leader(args: argparse.Namespace) -> int:
    leader, members = asyncio.run(_read(args))
    d = leadership_dict(leader, members, now=time.time())
    if args.json:
        print_json(d)
    else:
        print(render_leadership(d))
    return 0
