"""`corral status` (the cluster at a glance) and `corral cluster verify` (what is
wrong, one finding per line; exit 1 when there are errors).

Read-only: appends nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from orchestrator.cli.context import (
    add_target_options,
    print_json,
    read_state,
    size,
    table,
)
from orchestrator.cluster_report import status_dict, verify


def add_status_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="cluster summary: nodes, instances, N+1, problems")
    add_target_options(p)
    c = sub.add_parser("cluster", help="cluster-wide checks")
    cs = c.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    v = cs.add_parser("verify", help="N+1, degraded DRBD, orphans, instances on wrong nodes")
    add_target_options(v)
    lead = cs.add_parser("leader", help="the leading orchestrator, its term, and the standbys")
    add_target_options(lead)


def render_status(d: dict[str, Any]) -> str:
    lines = [f"cluster {d['cluster'] or '(not declared yet)'}  revision {d['revision']}"]
    health = ", ".join(f"{len(v)} {k}" for k, v in d["nodes"]["by_health"].items())
    lines.append(f"nodes      {d['nodes']['total']} ({health or 'none'})")
    by = ", ".join(f"{v} {k}" for k, v in d["instances"]["by_status"].items())
    lines.append(f"instances  {d['instances']['total']} ({by or 'none'})")
    deg = d["instances"]["degraded"]
    lines.append(
        f"degraded   {len(deg)}"
        + (f": {', '.join(deg[:10])}{' ...' if len(deg) > 10 else ''}" if deg else "")
    )
    n1 = d["n_plus_one"]
    lines.append(
        "N+1        "
        + ("ok" if not n1["failing_nodes"] else "FAILING on " + ", ".join(n1["failing_nodes"]))
        + ("" if n1["policy"] else " (policy off)")
    )
    if d["last_apply"]:
        la = d["last_apply"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(la["time"]))
        lines.append(f"applied    {la['digest'][:12]} by {la['author']} at {when}")
    lines.append("")
    lines.append(
        table(
            [
                (
                    n["name"],
                    n["health"] + ("," + ",".join(n["flags"]) if n["flags"] else ""),
                    f"{size(n['memory_used_mib'])}/{size(n['memory_mib'])}",
                    size(n["n1_reserve_mib"]) + ("" if n["n1_ok"] else " !"),
                    f"{size(n['disk_used_mib'])}/{size(n['disk_mib'])}",
                    n["primaries"],
                    n["secondaries"],
                    n["vms_running"],
                )
                for n in d["node_table"]
            ],
            header=("NODE", "HEALTH", "MEM", "N+1", "DISK", "PRI", "SEC", "VMS"),
        )
    )
    if d["alerts"]:
        lines.append("")
        lines.extend(f"{a['severity']:<8} {a['subject']}: {a['message']}" for a in d["alerts"])
    if d["active_jobs"]:
        lines.append("")
        lines.extend(
            f"job {j['job_id']} {j['kind']} {' '.join(j['targets'])} {j['status']}"
            for j in d["active_jobs"]
        )
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    state = read_state(args)
    d = status_dict(state, now=time.time())
    if args.json:
        print_json(d)
    else:
        print(render_status(d))
    return 0


def run_cluster(args: argparse.Namespace) -> int:
    if args.cluster_command == "leader":
        from orchestrator.cli.leader import run_leader

        return run_leader(args)
    state = read_state(args)
    findings = verify(state, now=time.time())
    errors = sum(1 for f in findings if f.severity == "error")
    if args.json:
        print_json({"findings": [asdict(f) for f in findings], "errors": errors})
    elif not findings:
        print("cluster verify: no problems found")
    else:
        for f in findings:
            print(f"{f.severity:<8} {f.check:<15} {f.subject}: {f.message}")
        print(f"\n{errors} error(s), {len(findings) - errors} warning(s)")
    return 1 if errors else 0
