"""`corral plan -f FILE` and `corral apply -f FILE [--wait]`: load a desired-state
file, compare it with the live desired state, print the changes (and where new
instances would go), and on apply record them in one atomic append, then
optionally follow the work until it converges or fails.

Must not act on nodes; reactors do that. Exit codes: plan 0 = no changes, 2 = changes,
1 = error (bad file, refused plan, etcd unreachable); apply 0 = recorded (and
converged with --wait), 1 = error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from events.ids import InstanceName
from events.loading import follow
from events.model import (
    Event,
    InstanceInstalled,
    InstanceInstallFailed,
    PlacementRefused,
    StepFailed,
    StepSucceeded,
    instance_key,
)
from events.state import ClusterState
from events.store import EventStore, VersionConflict
from orchestrator.cli.context import (
    Target,
    UsageError,
    actor,
    add_target_options,
    current_state,
    open_store,
    print_json,
    target_from_args,
)
from orchestrator.desired.diff import Action, Diff
from orchestrator.desired.plan_view import plan_json, preview_placements, render_plan
from orchestrator.desired.record import expected_versions
from reactors.plans.instance import plan_instance

if TYPE_CHECKING:
    from orchestrator.desired.file import DesiredFile


def add_desired_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (
        ("plan", "show what applying a desired-state file would change (exit 2 if anything)"),
        ("apply", "record a desired-state file as the cluster's desired state"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("-f", "--file", type=Path, required=True, help="a YAML file or directory")
        p.add_argument(
            "--allow-destroy",
            action="store_true",
            help="allow removing instances that are not in the file (destroys their disks)",
        )
        p.add_argument(
            "--force",
            action="store_true",
            help="record in-place size changes that do not fit their nodes or break N+1 "
            "(the apply records what it was forced past)",
        )
        add_target_options(p)
        if name == "apply":
            p.add_argument("-m", "--message", default="", help="why (recorded with the apply)")
            p.add_argument("--wait", action="store_true", help="follow the work until converged")
            p.add_argument(
                "-v", "--verbose", action="store_true", help="with --wait: print every step"
            )
            p.add_argument(
                "--timeout", type=float, default=900.0, help="seconds --wait waits (default 900)"
            )


def _load(path: Path) -> DesiredFile:
    from orchestrator.desired.file import DesiredFileError, load_desired

    try:
        return load_desired(path)
    except DesiredFileError as exc:
        n = len(exc.problems)
        raise UsageError(
            f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was recorded\n{exc}"
        ) from exc


async def _plan(
    store: EventStore, desired: DesiredFile, *, allow_destroy: bool, force: bool
) -> tuple[ClusterState, Diff]:
    state = await current_state(store)
    # Here, not at the top: the request module reads YAML files, and the parsers
    # of `corral plan|apply` are built without that (as `_load` is).
    from orchestrator.desired.request import file_diff

    return state, file_diff(desired, state, allow_destroy=allow_destroy, force=force)


def run_desired(args: argparse.Namespace) -> int:
    desired = _load(args.file)
    for warning in desired.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    target = target_from_args(
        args, file_endpoints=desired.cluster.etcd_endpoints, file_cluster=desired.cluster.name
    )
    if target.cluster != desired.cluster.name:
        raise UsageError(
            f"{args.file} declares cluster {desired.cluster.name!r}, "
            f"but the target is {target.cluster!r}"
        )
    if args.command == "plan":
        return asyncio.run(_run_plan(args, desired, target))
    return asyncio.run(_run_apply(args, desired, target))


async def _run_plan(args: argparse.Namespace, desired: DesiredFile, target: Target) -> int:
    from orchestrator.desired.request import file_events

    async with open_store(target) as store:
        state, diff = await _plan(
            store, desired, allow_destroy=args.allow_destroy, force=args.force
        )
    events = file_events(desired, diff, author=actor(store), message="", now=time.time())
    placements = preview_placements(state=state, events=events) if not diff.problems else ()
    if args.json:
        print_json(plan_json(diff=diff, placements=placements))
    else:
        print(render_plan(diff=diff, placements=placements))
    if diff.problems:
        return 1
    return 0 if diff.empty else 2


async def _run_apply(args: argparse.Namespace, desired: DesiredFile, target: Target) -> int:
    from orchestrator.desired.request import file_events

    async with open_store(target) as store:
        state, diff = await _plan(
            store, desired, allow_destroy=args.allow_destroy, force=args.force
        )
        if diff.problems:
            print(render_plan(diff=diff, placements=()), file=sys.stderr)
            raise UsageError("the file cannot be applied as it is; nothing was recorded")
        if diff.empty:
            if args.json:
                print_json({"revision": state.revision, "changes": 0, "converged": True})
            else:
                print("No changes: the cluster's desired state matches the file.")
            return 0
        events = file_events(
            desired, diff, author=actor(store), message=args.message, now=time.time()
        )
        # One transaction when it fits etcd's limit (then all or nothing); a large
        # apply goes in several, each checking its own objects' versions. If a later
        # one conflicts, what went before stays recorded: running apply again
        # finishes the job, since it only records what still differs.
        batches = store.transactions_for(events, expected=expected_versions(diff=diff, state=state))
        revision = state.revision
        done = 0
        for batch, expected in batches:
            try:
                revision = await store.append(batch, expected=expected)
            except VersionConflict as exc:
                recorded = (
                    "nothing was recorded"
                    if not done
                    else f"{done} of {len(events)} events were recorded"
                )
                raise UsageError(
                    f"{exc}: the cluster changed while applying; {recorded}; run apply again"
                ) from exc
            done += len(batch)
        if not args.json:
            print(render_plan(diff=diff, placements=()))
            print(f"\nRecorded at revision {revision} ({len(events)} events).")
        converged = True
        failed: dict[str, str] = {}
        if args.wait:
            converged, failed = await _follow(
                store,
                state,
                applied=revision,
                diff=diff,
                timeout=args.timeout,
                quiet=args.json,
                verbose=args.verbose,
            )
        if args.json:
            print_json(
                {
                    "revision": revision,
                    "changes": len(diff.changes),
                    "events": [e.id for e in events],
                    "waited": bool(args.wait),
                    "converged": converged if args.wait else None,
                    "failed": failed,
                }
            )
        return 0 if converged and not failed else 1


def _watched(diff: Diff) -> set[InstanceName]:
    return {
        InstanceName(ch.name)
        for ch in diff.changes
        if ch.kind == "instance"
        and ch.action in (Action.CREATE, Action.MODIFY, Action.START, Action.STOP, Action.REMOVE)
    }


async def _follow(
    store: EventStore,
    before: ClusterState,
    *,
    applied: int,
    diff: Diff,
    timeout: float,
    quiet: bool,
    verbose: bool = False,
) -> tuple[bool, dict[str, str]]:
    """Follow the log from the apply on, printing step results of the applied
    instances and a progress line, until each is converged or has failed.

    The log is read from `before` (the state the apply was planned on), the
    apply's own events included, and judged only once the apply's last
    transaction (`applied`) is folded. A large apply takes several transactions,
    and the leader acts on the first while the next are written: following from
    the last one's revision with the apply's events folded in by hand skipped
    what the leader wrote in between (the placements of the first transaction's
    instances), and `--wait` waited for ever for placements it had missed
    (`make demo` stalled so in 3 of 12 runs)."""
    progress = _Progress(pending=_watched(diff), quiet=quiet, verbose=verbose)
    if not progress.pending:
        return True, progress.failed
    queue: asyncio.Queue[ClusterState] = asyncio.Queue()

    async def reader() -> None:
        async for event, st in follow(store, before):
            progress.seen(event, st)
            queue.put_nowait(st)

    task = asyncio.create_task(reader())
    deadline = time.monotonic() + timeout
    latest = before
    try:
        while progress.pending and time.monotonic() < deadline:
            try:
                latest = await asyncio.wait_for(queue.get(), timeout=1.0)
                while not queue.empty():
                    latest = queue.get_nowait()
            except TimeoutError:
                pass
            if latest.revision >= applied:
                progress.settle(latest)
    finally:
        task.cancel()
    return progress.end(latest, timeout=timeout)


class _Progress:
    """What `apply --wait` has seen so far: instances still pending, those failed."""

    def __init__(self, *, pending: set[InstanceName], quiet: bool, verbose: bool) -> None:
        self.pending = pending
        self.total = len(pending)
        self.failed: dict[str, str] = {}
        self.quiet, self.verbose = quiet, verbose
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:6.1f}s] {line}", flush=True)

    def settle(self, st: ClusterState) -> None:
        now = time.time()
        for name in sorted(self.pending):
            plan = plan_instance(state=st, instance=name, now=now)
            if plan.converged:
                self.pending.discard(name)
                what = "removed" if name not in st.desired.instances else _where(st, name)
                self.say(
                    f"{name} converged: {what}  ({self.total - len(self.pending)}/{self.total})"
                )
        self.pending -= {InstanceName(k.partition("/")[2]) for k in self.failed}

    def seen(self, event: Event, st: ClusterState) -> None:
        key = getattr(event, "key", None)
        if isinstance(event, StepSucceeded | StepFailed) and key in {
            instance_key(n) for n in self.pending
        }:
            if isinstance(event, StepFailed):
                self.say(f"{key}: {event.step} on {event.node} failed: {event.error}")
                record = st.last_steps.get(key)
                if record is not None and record.failures_in_a_row >= 3:
                    self.failed[key] = event.error
            elif self.verbose:
                self.say(f"{key}: {event.step} on {event.node} ok ({event.duration_s:.1f}s)")
        if isinstance(event, InstanceInstallFailed) and event.instance in self.pending:
            self.failed[instance_key(event.instance)] = event.error
            if "run OS definition" in event.error:  # os-create's (reactors.nodes.commands)
                self.say(
                    f"{event.instance}: OS definition {event.image} not installed {event.error}"
                )
            else:
                self.say(f"{event.instance}: OS image {event.image} not written {event.error}")
        elif isinstance(event, InstanceInstalled) and event.instance in self.pending:
            if not event.sha256:  # a Ganeti OS definition's create script ran
                self.say(f"{event.instance}: OS definition {event.image} installed on {event.node}")
            else:
                self.say(f"{event.instance}: OS image {event.image} written on {event.node}")
        if isinstance(event, PlacementRefused) and event.instance in self.pending:
            self.failed[instance_key(event.instance)] = event.reason
            self.say(f"{event.instance}: cannot be placed: {event.reason}")

    def end(self, latest: ClusterState, *, timeout: float) -> tuple[bool, dict[str, str]]:
        if self.pending:
            names = ", ".join(sorted(self.pending))
            self.say(f"gave up after {timeout:.0f}s; still working on: {names}")
            for name in sorted(self.pending):
                plan = plan_instance(state=latest, instance=name, now=time.time())
                steps = plan.waiting or tuple(s.summary for s in plan.steps)
                self.say(f"  {name}: " + "; ".join(steps))
            return False, self.failed
        if self.failed:
            self.say(f"{len(self.failed)} failed: " + ", ".join(sorted(self.failed)))
        else:
            self.say(f"all {self.total} converged")
        return not self.failed, self.failed


def _where(state: ClusterState, name: InstanceName) -> str:
    p = state.placements.get(name)
    spec = state.desired.instances.get(name)
    power = spec.power.value if spec else "?"
    return f"{power} on {p.primary}, mirrored to {p.secondary}" if p else power
