"""A desired-state request of the native API (its files' texts) checked against
one folded state and turned into either a plan, the events of an apply, or a
refusal: pure functions of their arguments with picklable results, so the API
runs them in a worker process (`orchestrator.offloop`). Parsing a megabyte of
YAML takes seconds and must never run on the orchestrator's event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from events.ids import new_event_id
from events.model import Event
from events.state import ClusterState
from orchestrator.desired.diff import Diff, diff_desired
from orchestrator.desired.file import DesiredFile, DesiredFileError, parse_desired
from orchestrator.desired.plan_view import plan_json, preview_placements
from orchestrator.desired.record import diff_events, expected_versions


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why the request changes nothing (the API's 422 body)."""

    code: str
    message: str
    problems: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    plan: dict[str, Any]  # plan_json's document


@dataclass(frozen=True, slots=True, kw_only=True)
class ToApply:
    """The events an apply records, in order, and the versions they expect."""

    events: tuple[Event, ...]
    expected: dict[str, int]
    changes: int
    digest: str


def _checked(
    texts: Sequence[tuple[str, str]],
    state: ClusterState,
    *,
    cluster: str,
    allow_destroy: bool,
    force: bool = False,
) -> tuple[DesiredFile, Diff] | Refusal:
    try:
        desired = parse_desired(texts)
    except DesiredFileError as exc:
        n = len(exc.problems)
        return Refusal(
            code="invalid_desired_state",
            message=(
                f"{n} problem{'s' if n != 1 else ''} in the desired state; nothing was recorded"
            ),
            problems=tuple(asdict(p) for p in exc.problems),
        )
    if desired.cluster.name != cluster:
        return Refusal(
            code="invalid_desired_state",
            message=f"the files declare cluster {desired.cluster.name!r}, but this is {cluster!r}",
        )
    return desired, file_diff(desired, state, allow_destroy=allow_destroy, force=force)


def file_diff(
    desired: DesiredFile, state: ClusterState, *, allow_destroy: bool, force: bool
) -> Diff:
    """What recording `desired` would change in `state` (the CLI's and the API's)."""
    return diff_desired(
        state=state,
        wanted=desired.cluster,
        absent=desired.absent,
        digest=desired.digest,
        allow_destroy=allow_destroy,
        force=force,
        files=desired.files,
    )


def file_events(
    desired: DesiredFile, diff: Diff, *, author: str, message: str, now: float
) -> list[Event]:
    """The events that record `diff` of `desired` (the CLI's and the API's)."""
    return diff_events(
        diff=diff,
        wanted=desired.cluster,
        digest=desired.digest,
        files=desired.files,
        author=author,
        message=message,
        now=now,
        new_id=new_event_id,
    )


def plan_request(
    texts: Sequence[tuple[str, str]],
    state: ClusterState,
    *,
    cluster: str,
    author: str,
    message: str,
    allow_destroy: bool,
    now: float,
    force: bool = False,
) -> Planned | Refusal:
    """What applying the files would change, with a preview of where new
    instances would go."""
    checked = _checked(texts, state, cluster=cluster, allow_destroy=allow_destroy, force=force)
    if isinstance(checked, Refusal):
        return checked
    desired, diff = checked
    events = file_events(desired, diff, author=author, message=message, now=now)
    placements = preview_placements(state=state, events=events) if not diff.problems else ()
    return Planned(plan=plan_json(diff=diff, placements=placements))


def apply_request(
    texts: Sequence[tuple[str, str]],
    state: ClusterState,
    *,
    cluster: str,
    author: str,
    message: str,
    allow_destroy: bool,
    now: float,
    force: bool = False,
) -> ToApply | Refusal:
    """The events that record the files as the desired state (none when nothing
    changes), or why they cannot be applied as they are."""
    checked = _checked(texts, state, cluster=cluster, allow_destroy=allow_destroy, force=force)
    if isinstance(checked, Refusal):
        return checked
    desired, diff = checked
    if diff.problems:
        return Refusal(
            code="refused",
            message="the desired state cannot be applied as it is; nothing was recorded",
            problems=tuple({"message": p} for p in diff.problems),
        )
    if diff.empty:
        return ToApply(events=(), expected={}, changes=0, digest=desired.digest)
    events = file_events(desired, diff, author=author, message=message, now=now)
    return ToApply(
        events=tuple(events),
        expected=expected_versions(diff=diff, state=state),
        changes=len(diff.changes),
        digest=desired.digest,
    )
