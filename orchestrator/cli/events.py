"""`corral events` (the audit log: filter, follow, or the cluster as it was at a
revision), `corral audit verify` (check the signed seals over the log) and
`corral audit seal-key` (make a seal signing key pair).

Read-only towards etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.lifecycle.retention import count_events
from events.lifecycle.seals import verify
from events.loading import load_state
from events.model import Event
from events.store import EventStore
from orchestrator.cli.context import (
    UsageError,
    add_target_options,
    open_store,
    print_json,
    target_from_args,
)
from orchestrator.cli.status import render_status
from orchestrator.cluster_report import event_json, status_dict
from orchestrator.event_query import EventFilter, parse_since

if TYPE_CHECKING:
    from events.lifecycle.seal_keys import SealKeys

_META = {"id", "time", "actor", "reason", "causation_id", "correlation_id"}
ENV_SEAL_KEYS = "CORRAL_SEAL_KEYS"
DEFAULT_SEAL_KEYS = "/etc/corral/seal-keys"


def add_events_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("events", help="the event log: filter, follow, or the state at a revision")
    ev.add_argument("--follow", "-F", action="store_true", help="keep printing new events")
    ev.add_argument(
        "--since", help="from this revision (a number), time (2026-11-25T14:00) or age (10m, 2h)"
    )
    ev.add_argument(
        "--type", action="append", default=[], help="event type or prefix (node., step.failed)"
    )
    ev.add_argument(
        "--object",
        action="append",
        default=[],
        help="object key (instance/vm01, node/node2) or bare name",
    )
    ev.add_argument("--limit", type=int, default=0, help="only the last N matching events")
    ev.add_argument("--at", type=int, metavar="REV", help="print the cluster as it was at REV")
    add_target_options(ev)
    audit = sub.add_parser("audit", help="audit the event log")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    av = asub.add_parser("verify", help="check every signed seal over the log")
    add_target_options(av)
    av.add_argument(
        "--seal-keys",
        metavar="DIR",
        help="the trusted public seal keys (*.pub; default: $CORRAL_SEAL_KEYS, else "
        f"{DEFAULT_SEAL_KEYS} when it exists); without them only hashes are checked",
    )
    keys = asub.add_parser(
        "seal-key", help="make a new seal signing key pair (for corral serve --seal-key)"
    )
    keys.add_argument("--key", type=Path, required=True, help="the private key file to write")
    keys.add_argument(
        "--public-dir",
        type=Path,
        default=Path(DEFAULT_SEAL_KEYS),
        help=f"where its public key goes, as KEYID.pub (default {DEFAULT_SEAL_KEYS})",
    )


def _summary(event: Event) -> str:
    parts = []
    for f in fields(event):
        if f.name in _META:
            continue
        value = getattr(event, f.name)
        if value in (None, "", (), 0.0) and f.name not in ("health",):
            continue
        if f.name in ("spec", "policy", "facts", "volumes", "drbd", "vms", "disks", "params"):
            value = _short(value)
        elif isinstance(value, float):
            value = round(value, 3)
        parts.append(f"{f.name}={value}")
    text = " ".join(str(p) for p in parts)
    if event.reason:
        text += f" — {event.reason}"
    return text


def _short(value: Any) -> str:
    if hasattr(value, "name") and hasattr(value, "__dataclass_fields__"):
        return str(value.name)
    if isinstance(value, tuple):
        return f"[{len(value)}]"
    return "{…}"


def _line(revision: int, event: Event) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
    return f"{revision:>7}  {when}  {event.TYPE:<20} {event.actor:<14} {_summary(event)}"


def run_events(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_events(args))
    except KeyboardInterrupt:
        return 0


async def _events(args: argparse.Namespace) -> int:
    try:
        from_rev, since_time = parse_since(args.since, now=time.time())
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    flt = EventFilter.of(types=args.type, objects=args.object, since_time=since_time)
    async with open_store(target_from_args(args)) as store:
        if args.at is not None:
            return await _state_at(args, store)
        matched: list[tuple[int, Event]] = []
        last = 0
        async for revision, event in store.read_all(from_revision=from_rev):
            last = revision
            if flt.matches(event):
                matched.append((revision, event))
        if args.limit > 0:
            matched = matched[-args.limit :]
        if args.json and not args.follow:
            print_json([event_json(r, e) for r, e in matched])
            return 0
        for revision, event in matched:
            _print_event(revision, event, as_json=args.json)
        if not args.follow:
            return 0
        start = last + 1 if last else max(from_rev, 1)
        async for revision, event in store.subscribe(start):
            if flt.matches(event):
                _print_event(revision, event, as_json=args.json)
    return 0


async def _state_at(args: argparse.Namespace, store: EventStore) -> int:
    if args.at < 0:
        raise UsageError("--at: a revision is zero or more")
    state = await load_state(store, at=args.at)
    d = status_dict(state, now=time.time())
    if args.json:
        print_json(d)
    else:
        print(f"as of revision {args.at} (last event at revision {state.revision})")
        print(render_status(d))
    return 0


def _print_event(revision: int, event: Event, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event_json(revision, event), default=str), flush=True)
    else:
        print(_line(revision, event), flush=True)


def run_audit(args: argparse.Namespace) -> int:
    from events.lifecycle.seal_keys import SealKeyError, new_key_pair

    if args.audit_command == "seal-key":
        try:
            kid = new_key_pair(args.key, args.public_dir)
        except (SealKeyError, OSError) as exc:
            raise UsageError(str(exc)) from None
        print(f"seal key {kid}: private {args.key} (mode 0600), public {args.public_dir}/{kid}.pub")
        return 0
    return asyncio.run(_audit(args))


def _seal_keys(args: argparse.Namespace) -> SealKeys | None:
    """The trusted seal keys: --seal-keys, $CORRAL_SEAL_KEYS, else the default
    directory when it exists; None (hashes only) otherwise."""
    from events.lifecycle.seal_keys import SealKeyError, SealKeys

    named = args.seal_keys or os.environ.get(ENV_SEAL_KEYS)
    directory = Path(named) if named else Path(DEFAULT_SEAL_KEYS)
    if not named and not directory.is_dir():
        return None
    try:
        return SealKeys.from_dir(directory)
    except SealKeyError as exc:
        raise UsageError(str(exc)) from None


async def _audit(args: argparse.Namespace) -> int:
    keys = _seal_keys(args)
    async with open_store(target_from_args(args)) as store:
        result = await verify(store, keys=keys)
        segments, _ = await store.archived_segments()
        total = sum(s.events for s in segments) + await count_events(store)
    d = {**asdict(result), "events": total, "unsealed": total - result.sealed_events}
    if args.json:
        print_json(d)
    elif result.ok:
        how = (
            f"signatures checked against {len(keys.keys)} seal key(s)"
            if keys is not None
            else "hashes only: no seal keys (--seal-keys), so a rewrite by someone who can "
            "write etcd would not be seen"
        )
        print(
            f"audit verify: ok — {result.sealed_events} events under {result.seals} seals "
            f"({how}); {d['unsealed']} newer events not sealed yet"
        )
    else:
        where = f" (key {result.key}, revision {result.revision})" if result.key else ""
        print(f"audit verify: FAILED — {result.problem}{where}")
    return 0 if result.ok else 1
