"""`corral instance ...`, `corral node ...` and `corral job ...`: list and inspect
objects, and ask for imperative operations (recorded as events with the user as
actor, through `orchestrator.operations`), optionally following the job they start.

Must not act on nodes itself, except `instance console`, which only relays the serial
console of the primary over SSH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import asdict
from pathlib import Path

from events.ids import InstanceName, NodeName, check_name, new_event_id
from events.model import JobKind, NodeRemoved
from events.state import ClusterState
from events.store import EventStore
from orchestrator.cli.context import (
    UsageError,
    actor,
    add_target_options,
    confirm_by_name,
    current_state,
    open_store,
    parse_size,
    print_json,
    size,
    table,
    target_from_args,
)
from orchestrator.cli.objects.console import console
from orchestrator.cli.objects.devices import add_device_parsers, run_device_command
from orchestrator.cli.objects.jobs import job_command, report_accepted
from orchestrator.cli.objects.node_parsers import add_node_parsers, add_reboot_plan_parser
from orchestrator.cluster_report import instance_info, instance_row, node_info, node_rows
from orchestrator.instance_changes import modify_instance, rename_instance
from orchestrator.operations import (
    INSTANCE_VERBS,
    NODE_FLAG_VERBS,
    NODE_JOB_VERBS,
    Accepted,
    OperationRefused,
    confirm_node_off,
    set_node_flags,
    submit_job,
)
from orchestrator.reinstall import reinstall_instance


def add_object_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inst = sub.add_parser("instance", help="list, inspect and operate instances")
    isub = inst.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_target_options(isub.add_parser("list", help="every instance, one line each"))
    for action in ("info", "console", *INSTANCE_VERBS):
        p = isub.add_parser(action, help=f"{action} an instance")
        p.add_argument("name")
        add_target_options(p)
        if action in INSTANCE_VERBS:
            p.add_argument("--wait", action="store_true", help="follow the job until it ends")
            p.add_argument("--reason", default="", help="why (recorded)")
        if action == "replace-disks":
            p.add_argument(
                "--mode",
                choices=["change-secondary", "secondary-rebuild"],
                default="change-secondary",
            )
            p.add_argument(
                "--new-secondary", help="change-secondary: this node (default: allocator)"
            )
        if action == "grow-disk":
            p.add_argument("--disk", type=int, default=0, help="disk index (default 0)")
            p.add_argument("--amount", type=parse_size, required=True, help="e.g. 10G")
        if action == "console":
            p.add_argument("--known-hosts", type=Path, default=os.environ.get("CORRAL_KNOWN_HOSTS"))
            p.add_argument("--client-key", type=Path, default=os.environ.get("CORRAL_CLIENT_KEY"))
            p.add_argument(
                "--vnc",
                action="store_true",
                help="forward a local port to the VM's VNC display (prints the port) "
                "instead of relaying the serial console",
            )
            p.add_argument(
                "--local-port",
                type=int,
                default=0,
                help="with --vnc: the local port (default: a free one)",
            )

    mod = isub.add_parser("modify", help="change an instance's memory or vcpus (a job)")
    mod.add_argument("name")
    add_target_options(mod)
    mod.add_argument("--memory", type=parse_size, help="new memory, e.g. 2G")
    mod.add_argument("--vcpus", type=int, help="new number of vcpus")
    mod.add_argument(
        "--force",
        action="store_true",
        help="record it even if it does not fit on its nodes or breaks N+1 (recorded)",
    )
    mod.add_argument("--wait", action="store_true", help="follow the job until it ends")
    mod.add_argument("--reason", default="", help="why (recorded)")

    ren = isub.add_parser(
        "rename", help="rename a stopped instance: its disks on both nodes, then the record (a job)"
    )
    ren.add_argument("name")
    ren.add_argument("new_name")
    add_target_options(ren)
    ren.add_argument("--wait", action="store_true", help="follow the job until it ends")
    ren.add_argument("--reason", default="", help="why (recorded)")
    _add_reinstall_parser(isub)
    add_device_parsers(isub)

    node = sub.add_parser("node", help="list, inspect and operate nodes")
    nsub = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_target_options(nsub.add_parser("list", help="every node, one line each"))
    for action in ("info", "remove", "confirm-off", *NODE_FLAG_VERBS, *NODE_JOB_VERBS):
        p = nsub.add_parser(action, help=f"{action} a node")
        p.add_argument("name")
        add_target_options(p)
        p.add_argument(
            "--reason",
            default="",
            help="why (recorded; confirm-off needs it: how you know the node is off)",
        )
        if action in NODE_JOB_VERBS:
            p.add_argument("--wait", action="store_true", help="follow the job until it ends")
        if action == "evacuate":
            p.add_argument(
                "--plan",
                action="store_true",
                help="print what would move where (and the data to resync); change nothing",
            )
    add_reboot_plan_parser(nsub)
    add_node_parsers(nsub)

    job = sub.add_parser("job", help="list, inspect, follow and cancel jobs")
    jsub = job.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = jsub.add_parser("list", help="recent jobs")
    lst.add_argument("--all", action="store_true", help="all jobs, not only the last 50")
    add_target_options(lst)
    for action in ("info", "watch", "cancel"):
        p = jsub.add_parser(action, help=f"{action} a job")
        p.add_argument("job_id")
        add_target_options(p)


def _add_reinstall_parser(isub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rei = isub.add_parser(
        "reinstall",
        help="write the instance's OS image onto its first disk again (its data is lost)",
    )
    rei.add_argument("name")
    add_target_options(rei)
    rei.add_argument("--os", help="another image of the applied file's catalogue")
    rei.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rei.add_argument("--wait", action="store_true", help="follow the job until it ends")
    rei.add_argument("--reason", default="", help="why (recorded)")


def run_objects(args: argparse.Namespace) -> int:
    if args.command == "node" and args.action == "reboot-plan":
        from orchestrator.cli.planning.plan_tools import run_reboot_plan

        return run_reboot_plan(args)
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    async with open_store(target_from_args(args)) as store:
        state = await current_state(store)
        try:
            if args.command == "instance" and args.action in ("nics", "remove-disk"):
                return await run_device_command(args, store, state)
            if args.command == "instance":
                return await _instance(args, store, state)
            if args.command == "node":
                return await _node(args, store, state)
            return await job_command(args, store, state)
        except OperationRefused as exc:
            where = f"{exc.field}: " if exc.field else ""
            raise UsageError(f"refused: {where}{exc}; nothing was recorded") from exc
        except ValueError as exc:  # InvalidName and friends
            raise UsageError(f"{exc}; nothing was recorded") from exc


# ---------------------------------------------------------------------- instances


async def _instance(args: argparse.Namespace, store: EventStore, state: ClusterState) -> int:
    now = time.time()
    if args.action == "list":
        rows = [instance_row(state, n, now=now) for n in sorted(state.desired.instances)]
        if args.json:
            print_json([asdict(r) for r in rows])
            return 0
        print(
            table(
                [
                    (
                        r.name,
                        r.status + (",degraded" if r.degraded else ""),
                        r.primary or "-",
                        r.secondary or "-",
                        size(r.memory_mib),
                        r.vcpus,
                        size(r.disk_mib),
                    )
                    for r in rows
                ],
                header=("INSTANCE", "STATUS", "PRIMARY", "SECONDARY", "MEM", "VCPUS", "DISK"),
            )
        )
        return 0
    name = check_name(args.name, what="instance name")
    if InstanceName(name) not in state.desired.instances:
        raise UsageError(f"no instance named {name!r}")
    if args.action == "info":
        return _instance_info(args, state, InstanceName(name), now=now)
    if args.action == "console":
        return await console(args, state, InstanceName(name))
    if args.action == "modify":
        accepted = await modify_instance(
            store,
            state,
            instance=name,
            memory_mib=args.memory,
            vcpus=args.vcpus,
            force=args.force,
            actor=actor(store),
            reason=args.reason,
        )
        return await report_accepted(args, store, accepted)
    if args.action == "rename":
        accepted = await rename_instance(
            store,
            state,
            instance=name,
            new_name=args.new_name,
            actor=actor(store),
            reason=args.reason,
        )
        return await report_accepted(args, store, accepted)
    if args.action == "reinstall":
        confirm_by_name(
            args,
            name,
            refused=f"reinstalling {name} destroys the data on its first disk; pass --yes",
            prompt=f"Reinstalling {name} stops it and overwrites its first disk with the OS image: "
            "its data is lost. Type the instance name to go on: ",
        )
        accepted = await reinstall_instance(
            store, state, instance=name, os_name=args.os, actor=actor(store), reason=args.reason
        )
        return await report_accepted(args, store, accepted)
    params: dict[str, str] = {}
    if args.action == "replace-disks":
        params["mode"] = args.mode
        if args.new_secondary:
            params["node"] = check_name(args.new_secondary, what="--new-secondary")
    if args.action == "grow-disk":
        params.update(disk=str(args.disk), amount_mib=str(args.amount))
    accepted = await submit_job(
        store,
        state,
        kind=INSTANCE_VERBS[args.action],
        target=name,
        params=params,
        actor=actor(store),
        reason=args.reason,
    )
    return await report_accepted(args, store, accepted)


def _instance_info(
    args: argparse.Namespace, state: ClusterState, name: InstanceName, *, now: float
) -> int:
    info = instance_info(state, name, now=now)
    if args.json:
        print_json(info)
        return 0
    for key in (
        "name", "status", "primary", "secondary", "power", "memory_mib", "vcpus", "os",
        "degraded", "converged", "restart_required", "placed_by", "refusal", "version",
    ):  # fmt: skip
        print(f"{key:<17} {info[key]}")
    for d in info["disks"]:
        print(
            f"disk {d['index']:<12} {size(d['size_mib'])}  /dev/drbd{d['drbd_minor']}  "
            f"port {d['drbd_port']}"
        )
    for w in info["waiting"]:
        print(f"waiting          {w}")
    if info["last_step"]:
        ls = info["last_step"]
        ok = {True: "ok", False: "FAILED", None: "running"}[ls["ok"]]
        print(f"last step        {ls['step']} on {ls['node']}: {ok} {ls['error']}".rstrip())
    return 0


# ---------------------------------------------------------------------- nodes


def _node_list(args: argparse.Namespace, state: ClusterState) -> int:
    rows = node_rows(state)
    if args.json:
        print_json([asdict(r) for r in rows])
        return 0
    print(
        table(
            [
                (
                    r.name,
                    r.health,
                    ",".join(r.flags) or "-",
                    f"{size(r.memory_used_mib)}/{size(r.memory_mib)}",
                    "ok" if r.n1_ok else f"FAIL ({size(r.n1_reserve_mib)})",
                    f"{size(r.disk_used_mib)}/{size(r.disk_mib)}",
                    r.primaries,
                    r.secondaries,
                )
                for r in rows
            ],
            header=("NODE", "HEALTH", "FLAGS", "MEM", "N+1", "DISK", "PRI", "SEC"),
        )
    )
    return 0


async def _node(args: argparse.Namespace, store: EventStore, state: ClusterState) -> int:
    if args.action == "list":
        return _node_list(args, state)
    name = NodeName(check_name(args.name, what="node name"))
    if args.action in ("add", "check"):
        from orchestrator.cli.objects import node_setup

        run = node_setup.node_add if args.action == "add" else node_setup.node_check
        return await run(args, store, state, name)
    if name not in state.desired.nodes:
        raise UsageError(f"no node named {name!r}")
    if args.action == "info":
        return _node_info(args, state, name)
    if args.action in NODE_FLAG_VERBS:
        accepted = await set_node_flags(
            store,
            state,
            node=name,
            actor=actor(store),
            reason=args.reason,
            **NODE_FLAG_VERBS[args.action],
        )
        return await report_accepted(args, store, accepted)
    if args.action == "confirm-off":
        accepted = await confirm_node_off(
            store, state, node=name, actor=actor(store), reason=args.reason
        )
        return await report_accepted(args, store, accepted)
    if args.action == "remove":
        return await _node_remove(args, store, state, name)
    if args.action == "evacuate":
        return await _evacuate(args, store, state, name)
    accepted = await submit_job(
        store,
        state,
        kind=NODE_JOB_VERBS[args.action],
        target=name,
        actor=actor(store),
        reason=args.reason,
    )
    return await report_accepted(args, store, accepted)


async def _evacuate(
    args: argparse.Namespace, store: EventStore, state: ClusterState, name: NodeName
) -> int:
    """The plan first; with --plan only the plan. Otherwise the node is drained (so
    nothing new lands on it) and the evacuate job recorded."""
    from reactors.placement.evacuation import plan_evacuation

    plan = plan_evacuation(state=state, node=name)
    doc = {
        "node": name,
        "moves": [asdict(m) for m in plan.moves],
        "refused": [{"instance": i, "reason": r} for i, r in plan.refused],
        "data_mib": plan.data_mib,
        "n1_failures_after": list(plan.n1_failures_after),
    }
    if args.plan:
        if args.json:
            print_json(doc)
            return 0
        for m in plan.moves:
            print(
                f"{m.instance:<20} {m.kind:<26} {m.old_primary}/{m.old_secondary} -> "
                f"{m.new_primary}/{m.new_secondary}"
                + (f"  ({size(m.data_mib)} to resync)" if m.data_mib else "")
            )
        for i, r in plan.refused:
            print(f"{i:<20} cannot move: {r}")
        n1 = ", ".join(plan.n1_failures_after) or "none"
        print(
            f"\n{len(plan.moves)} move(s), {size(plan.data_mib)} to resync; "
            f"N+1 failures after: {n1}"
        )
        return 1 if plan.refused else 0
    if plan.refused:
        raise UsageError(
            f"{len(plan.refused)} instance(s) on {name} have nowhere to go "
            f"({plan.refused[0][0]}: {plan.refused[0][1]}); see `corral node evacuate {name} "
            "--plan`; nothing was recorded"
        )
    if not state.desired.nodes[name].drained:
        await set_node_flags(
            store, state, node=name, drained=True, actor=actor(store), reason=f"evacuating {name}"
        )
        state = await current_state(store)
    accepted = await submit_job(
        store,
        state,
        kind=JobKind.NODE_EVACUATE,
        target=name,
        actor=actor(store),
        reason=args.reason,
    )
    if not args.json:
        print(f"{name} drained; {len(plan.moves)} move(s) planned, {size(plan.data_mib)} to resync")
    return await report_accepted(args, store, accepted)


def _node_info(args: argparse.Namespace, state: ClusterState, name: NodeName) -> int:
    info = node_info(state, name)
    if args.json:
        print_json(info)
        return 0
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list | tuple) else value
        print(f"{key:<20} {shown}")
    return 0


async def _node_remove(
    args: argparse.Namespace, store: EventStore, state: ClusterState, name: NodeName
) -> int:
    held = sorted(i for i, p in state.placements.items() if name in (p.primary, p.secondary))
    if held:
        raise UsageError(
            f"node {name} holds {len(held)} instance(s) ({', '.join(held[:5])}"
            f"{'...' if len(held) > 5 else ''}); run `corral node evacuate {name}` first"
        )
    event = NodeRemoved(
        id=new_event_id(), time=time.time(), actor=actor(store), reason=args.reason, node=name
    )
    revision = await store.append(
        [event], expected={f"node/{name}": state.versions.get(f"node/{name}", 0)}
    )
    return await report_accepted(args, store, Accepted(revision=revision, event_ids=(event.id,)))
