"""Planning commands that change nothing: `corral export htools` (the live cluster
in htools' text format), `corral capacity` (how many more instances fit, N+1-safe,
optionally with hypothetical nodes; on a cluster where a node already fails N+1
it says so and counts as hspace does, 0, unless asked to count what fits without
adding a failure; on one that only cannot lose some node it says so and counts
as hspace does, which goes on allocating) and `corral node reboot-plan` (groups
of nodes that can reboot together). Each works on the live cluster or, with
`--htools FILE`, offline on an htools snapshot the way `hspace -t` / `hroller -t`
do; on a file, capacity keeps htools' own limits too (each node's spindle room
and the strict free-space checks, `reactors.htools.state`).

Read-only.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from events.ids import NodeName
from events.state import ClusterState
from orchestrator.cli.context import (
    UsageError,
    add_target_options,
    print_json,
    read_state,
)
from reactors.htools.model import BCluster, from_state
from reactors.htools.redundancy import LossVerdict, unredundant
from reactors.htools.score import n1_failures, score
from reactors.htools.state import HTOOLS_KEEP_FREE_MIB, SpindleRoom, spindle_room, to_state
from reactors.htools.text import parse, render
from reactors.placement.capacity import CapacityResult, NewNode, Spec, TierResult, capacity

_UNITS = {"M": 1, "G": 1024, "T": 1024 * 1024}


def _size(text: str, *, what: str) -> int:
    t = text.strip().upper()
    try:
        value = int(t[:-1]) * _UNITS[t[-1]] if t[-1:] in _UNITS else int(t)
    except (ValueError, IndexError):
        raise UsageError(f"{what}: {text!r} is not a size like 512M, 20G or 2T") from None
    if value <= 0:
        raise UsageError(f"{what}: {text!r} must be more than zero")
    return value


def parse_triple(text: str, *, what: str) -> tuple[int, int, int]:
    """MEM,DISK,CPUS such as 1G,20G,1."""
    parts = text.split(",")
    if len(parts) != 3:
        raise UsageError(f"{what}: {text!r} is not MEMORY,DISK,CPUS (e.g. 1G,20G,1)")
    mem = _size(parts[0], what=what)
    disk = _size(parts[1], what=what)
    try:
        cpus = int(parts[2])
    except ValueError:
        raise UsageError(f"{what}: {parts[2]!r} is not a number of cpus") from None
    if cpus < 1:
        raise UsageError(f"{what}: cpus must be at least 1")
    return mem, disk, cpus


def add_plan_tool_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exp = sub.add_parser("export", help="export the live cluster for other tools")
    esub = exp.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    ht = esub.add_parser("htools", help="htools text format (hbal -t, hspace -t, hinfo -t)")
    ht.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    add_target_options(ht)
    cap = sub.add_parser("capacity", help="how many more instances of a spec fit, N+1-safe")
    cap.add_argument(
        "--without-new-n1-failures",
        action="store_true",
        help="on a cluster that already fails N+1, count what fits without adding an N+1 "
        "failure (the failing nodes take nothing); by default such a cluster fits 0 more, "
        "as hspace counts",
    )
    cap.add_argument(
        "--spec",
        action="append",
        required=True,
        metavar="MEM,DISK,CPUS",
        help="e.g. 1G,20G,1; repeat for tiers, largest first",
    )
    cap.add_argument(
        "--add-node",
        action="append",
        default=[],
        metavar="MEM,DISK,CPUS",
        help="a hypothetical node, e.g. 24G,730G,8 (repeat for more)",
    )
    cap.add_argument("--htools", type=Path, help="plan on an htools text file, offline")
    add_target_options(cap)


def _state(args: argparse.Namespace) -> ClusterState:
    if getattr(args, "htools", None) is not None:
        path: Path = args.htools
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"--htools: cannot read {path}: {exc.strerror}") from exc
        try:
            return to_state(cluster=parse(text))
        except ValueError as exc:
            raise UsageError(f"--htools: {path}: {exc}") from exc

    return read_state(args)


def run_export(args: argparse.Namespace) -> int:
    state = _state(args)
    text = render(from_state(state=state))
    if args.output:
        args.output.write_text(text)
        print(
            f"wrote {args.output} ({len(state.desired.nodes)} nodes, "
            f"{len(state.placements)} instances)",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


def _htools_view(args: argparse.Namespace, state: ClusterState) -> BCluster:
    """The cluster as htools see it: the file itself for --htools (reported
    memory and all), else the live cluster's export."""
    if getattr(args, "htools", None) is not None:
        return parse(Path(args.htools).read_text())
    return from_state(state=state)


def run_capacity(args: argparse.Namespace) -> int:
    specs = tuple(
        Spec(memory_mib=m, disk_mib=d, vcpus=c)
        for m, d, c in (parse_triple(s, what="--spec") for s in args.spec)
    )
    nodes = tuple(
        NewNode(memory_mib=m, disk_mib=d, cpus=c)
        for m, d, c in (parse_triple(s, what="--add-node") for s in args.add_node)
    )
    state = _state(args)
    view = _htools_view(args, state)
    on_file = getattr(args, "htools", None) is not None
    started = time.monotonic()
    failing = n1_failures(view)
    cannot_lose = unredundant(view)
    room = spindle_room(cluster=view)
    # hspace allocates nothing when a node already fails N+1 (Hspace.main stops
    # on Cluster.computeBadItems' nodes); that the cluster cannot lose some
    # node (the global check) stops it only with --independent-groups
    as_hspace = bool(failing) and not args.without_new_n1_failures
    if as_hspace:
        result = CapacityResult(
            tiers=tuple(
                TierResult(spec=spec, count=0, stopped_by="FailN1: the cluster already fails N+1")
                for spec in specs
            ),
            added_nodes=(),
            state=state,
            spindle_room=room,
        )
    else:
        result = capacity(
            state=state,
            specs=specs,
            add_nodes=nodes,
            spindle_room=room,
            keep_free_mib=HTOOLS_KEEP_FREE_MIB if on_file else 0,
        )
    took = time.monotonic() - started
    final = from_state(state=result.state)
    if failing:
        counted = (
            "as hspace: 0 on a cluster failing N+1" if as_hspace else "without new N+1 failures"
        )
    elif cannot_lose:
        counted = "as hspace: each node keeps N+1, but the cluster cannot lose every node"
    else:
        counted = "n+1-safe"
    doc: dict[str, Any] = {
        "n1_failures_before": list(failing),
        "cannot_lose": [asdict(v) for v in cannot_lose],
        "counted": counted,
        "tiers": [
            {**asdict(t.spec), "count": t.count, "stopped_by": t.stopped_by} for t in result.tiers
        ],
        "total": result.total,
        "added_nodes": list(result.added_nodes),
        "nodes": [
            {
                "name": name,
                "spindle_room": room[name].copies if name in room else None,
                "spindle_room_after": (
                    result.spindle_room[name].copies if name in result.spindle_room else None
                ),
            }
            for name in sorted(result.state.desired.nodes)
        ],
        "score_after": round(score(final).total, 6),
        "n1_failures_after": list(n1_failures(final)),
        "seconds": round(took, 3),
    }
    if args.json:
        print_json(doc)
        return 0
    if failing or cannot_lose:
        _say_n1_unhappy(failing, cannot_lose)
    if result.added_nodes:
        print(f"with {len(result.added_nodes)} more node(s): {', '.join(result.added_nodes)}")
    if room:
        _say_spindle_room(room, result.spindle_room)
    for t in result.tiers:
        print(f"{t.spec.label():<28} {t.count:>6} more   (stopped: {t.stopped_by})")
    if failing and as_hspace:
        safety = (
            "as hspace counts on a cluster that fails N+1 (--without-new-n1-failures counts "
            "what fits without adding a failure)"
        )
    elif failing:
        safety = "without adding an N+1 failure; the cluster still fails N+1 as before"
    elif cannot_lose:
        safety = (
            "as hspace counts: each node keeps N+1 for its peers, but the cluster still "
            "cannot lose every node"
        )
    else:
        safety = "N+1-safe"
    print(
        f"total {result.total} more instances, {safety}; cluster score after {doc['score_after']}"
    )
    return 0


def _say_n1_unhappy(failing: tuple[str, ...], cannot_lose: tuple[LossVerdict, ...]) -> None:
    print("the cluster already fails N+1:")
    if failing:
        print(
            f"  {len(failing)} node(s) report less free memory than they hold for a peer's "
            f"failover: {', '.join(failing)}"
        )
    if not cannot_lose:
        return
    names = ", ".join(v.node for v in cannot_lose)
    print(f"  losing any of {len(cannot_lose)} node(s) would strand instances: {names}")
    for v in cannot_lose[:5]:
        print(f"    {v.node}: {v.instance}: {v.why}")
    if len(cannot_lose) > 5:
        print(f"    ... and {len(cannot_lose) - 5} more")


def _say_spindle_room(
    before: dict[NodeName, SpindleRoom], after: dict[NodeName, SpindleRoom]
) -> None:
    """Each node's spindle room, before the allocations and after them."""
    print(
        "spindle room (instance disk copies each node may still take: spindle_ratio x "
        "spindles less the spindles in use; free spindles with exclusive storage), "
        "before -> after:"
    )
    for name in sorted(before):
        left = after.get(name, before[name])
        print(f"  {name:<24} {before[name].copies:>5} -> {left.copies:<5} ({before[name].kind})")


def run_reboot_plan(args: argparse.Namespace) -> int:
    state = _state(args)
    from reactors.placement.reboot import plan_reboots  # `capacity` does not need it

    plan = plan_reboots(state=state, evacuate=args.evacuate)
    if args.json:
        print_json(
            {
                "evacuate": plan.evacuate,
                "groups": [
                    {
                        "nodes": list(g.nodes),
                        "migrations": [asdict(m) for m in g.migrations],
                        "evacuation": [asdict(m) for m in g.evacuation],
                        "data_mib": g.data_mib,
                    }
                    for g in plan.groups
                ],
                "skipped": list(plan.skipped),
            }
        )
        return 0
    how = "evacuate each group first" if plan.evacuate else "live-migrate primaries to secondaries"
    print(f"{len(plan.groups)} reboot group(s) ({how}):")
    for i, g in enumerate(plan.groups, 1):
        if plan.evacuate:
            copies = sum(1 for m in g.evacuation if m.data_mib)
            print(
                f"  {i:>2}. {' '.join(g.nodes)}   ({len(g.evacuation)} moves, {copies} new "
                f"secondaries, {g.data_mib / 1024:.0f} GiB copied)"
            )
        else:
            print(f"  {i:>2}. {' '.join(g.nodes)}   ({len(g.migrations)} migrations)")
    for s in plan.skipped:
        print(f"  not planned: {s}")
    return 0
