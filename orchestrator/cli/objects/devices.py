"""`corral instance nics NAME` and `corral instance remove-disk NAME`: NICs removed
or changed (recorded with an `instance.modify` job, taking effect at the next
start; NICs that stay keep their MACs) and the last disk of a stopped instance
removed (an `instance.remove-disk` job, after a confirmation: its data is lost).
Both go through `orchestrator.device_changes`, as the native API and the RAPI do.

Must not act on nodes itself.
"""

from __future__ import annotations

import argparse
import re

from events.ids import InstanceName, check_name
from events.state import ClusterState
from events.store import EventStore
from orchestrator.cli.context import UsageError, actor, add_target_options, confirm_by_name
from orchestrator.cli.objects.jobs import report_accepted
from orchestrator.device_changes import (
    NicEdit,
    change_nics,
    nics_edited,
    others_macs,
    remove_disk,
    with_checked_macs,
)

_SET = re.compile(r"(?P<index>[0-9]{1,2}):(?P<key>[a-z_]{1,20})=(?P<value>.{0,200})")


def add_device_parsers(isub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    nics = isub.add_parser(
        "nics",
        help="remove or change an instance's NICs (recorded; at its next start; MACs kept)",
    )
    nics.add_argument("name")
    add_target_options(nics)
    nics.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="INDEX:KEY=VALUE",
        help="change one field of NIC INDEX (link, mode, ip, mac...); repeatable",
    )
    nics.add_argument(
        "--remove",
        action="append",
        type=int,
        default=[],
        metavar="INDEX",
        help="remove NIC INDEX (as numbered before any removal); repeatable",
    )
    nics.add_argument("--wait", action="store_true", help="follow the job until it ends")
    nics.add_argument("--reason", default="", help="why (recorded)")

    rem = isub.add_parser(
        "remove-disk",
        help="remove the last disk of a stopped instance: its DRBD resource and LVs on "
        "both nodes (its data is lost)",
    )
    rem.add_argument("name")
    add_target_options(rem)
    rem.add_argument("--disk", type=int, help="the disk's index (default: the last; only it)")
    rem.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rem.add_argument("--wait", action="store_true", help="follow the job until it ends")
    rem.add_argument("--reason", default="", help="why (recorded)")


def _edits(args: argparse.Namespace) -> list[NicEdit]:
    """The changes first (indexes of the list as it is), then the removals from
    the highest index down, so every index names the NIC the user saw."""
    edits = []
    for text in args.set:
        m = _SET.fullmatch(text)
        if m is None:
            raise UsageError(f"--set {text!r}: expected INDEX:KEY=VALUE, e.g. 0:link=br1")
        value: str | None = m["value"] or None
        edits.append(NicEdit(op="modify", index=int(m["index"]), params={m["key"]: value}))
    if len(set(args.remove)) != len(args.remove):
        raise UsageError("--remove: a NIC is named twice")
    edits.extend(NicEdit(op="remove", index=i) for i in sorted(args.remove, reverse=True))
    if not edits:
        raise UsageError("nothing to change: give --remove INDEX or --set INDEX:KEY=VALUE")
    return edits


async def run_device_command(
    args: argparse.Namespace, store: EventStore, state: ClusterState
) -> int:
    name = check_name(args.name, what="instance name")
    spec = state.desired.instances.get(InstanceName(name))
    if spec is None:
        raise UsageError(f"no instance named {name!r}")
    if args.action == "nics":
        new = with_checked_macs(
            nics_edited(spec, _edits(args)),
            taken=others_macs(state, name),
            prefix=state.desired.policy.mac_prefix,
        )
        accepted = await change_nics(store, state, new=new, actor=actor(store), reason=args.reason)
        return await report_accepted(args, store, accepted)
    confirm_by_name(
        args,
        name,
        refused=f"removing a disk of {name} destroys its data; pass --yes",
        prompt=f"Removing {name}'s last disk deletes its DRBD resource and LVs on both nodes: "
        "its data is lost. Type the instance name to go on: ",
    )
    accepted = await remove_disk(
        store, state, instance=name, index=args.disk, actor=actor(store), reason=args.reason
    )
    return await report_accepted(args, store, accepted)
