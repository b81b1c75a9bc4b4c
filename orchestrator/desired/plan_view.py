"""`corral plan`'s answer: the changes a desired-state file makes, where each new
instance would be placed (the allocator run on the state as it would be after the
apply), and the text and JSON forms of both.

Pure: no I/O, no logging. The preview uses the same allocator the placer runs, on the
same folded state, so what plan says is what apply will do unless the cluster changes
in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.ids import InstanceName
from events.model import Event, PlacementKind
from events.projection import fold
from events.state import ClusterState
from orchestrator.desired.diff import Action, Diff
from reactors.naming import new_disks
from reactors.placement.allocator import choose_pair
from reactors.placement.what_if import planned_placement, project


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementPreview:
    instance: InstanceName
    primary: str | None
    secondary: str | None
    refusal: str | None = None


def preview_placements(*, state: ClusterState, events: list[Event]) -> tuple[PlacementPreview, ...]:
    """Fold `events` onto `state` as if appended, then place every unplaced
    instance in name order, folding each choice before the next (as the placer does)."""
    # Appended together, the events share one revision.
    projected = fold(state, [(state.revision + 1, e) for e in events])
    out = []
    for name in sorted(n for n in projected.desired.instances if n not in projected.placements):
        spec = projected.desired.instances[name]
        choice = choose_pair(state=projected, spec=spec)
        if choice.primary is None or choice.secondary is None:
            out.append(
                PlacementPreview(
                    instance=name, primary=None, secondary=None, refusal=choice.refusal
                )
            )
            continue
        out.append(
            PlacementPreview(instance=name, primary=choice.primary, secondary=choice.secondary)
        )
        placed = planned_placement(
            instance=name,
            primary=choice.primary,
            secondary=choice.secondary,
            disks=new_disks(state=projected, disks=spec.disks),
            kind=PlacementKind.INITIAL,
        )
        projected = project(projected, [placed])
    return tuple(out)


_SIGN = {
    Action.CREATE: "+",
    Action.MODIFY: "~",
    Action.REMOVE: "-",
    Action.START: ">",
    Action.STOP: "#",
}


def render_plan(*, diff: Diff, placements: tuple[PlacementPreview, ...]) -> str:
    if diff.empty:
        return "No changes: the cluster's desired state matches the file."
    where = {p.instance: p for p in placements}
    lines = []
    if diff.drift:
        lines.append(
            "The file is the one last applied: these changes undo commands run since then."
        )
    for ch in diff.changes:
        head = f"{_SIGN[ch.action]} {ch.action} {ch.kind} {ch.name}"
        p = where.get(InstanceName(ch.name)) if ch.kind == "instance" else None
        if p is not None and ch.action is Action.CREATE:
            head += (
                f"  (on {p.primary} / {p.secondary})"
                if p.primary
                else f"  (cannot be placed now: {p.refusal})"
            )
        lines.append(head)
        lines.extend(f"      {f}" for f in ch.fields)
        lines.extend(f"      note: {n}" for n in ch.notes)
        lines.extend(f"      destructive: {d}" for d in ch.destructive)
    counts: dict[str, int] = {}
    for ch in diff.changes:
        counts[ch.action.value] = counts.get(ch.action.value, 0) + 1
    lines.append("")
    lines.append("Plan: " + ", ".join(f"{v} to {k}" for k, v in counts.items()) + ".")
    for problem in diff.problems:
        lines.append(f"error: {problem}")
    return "\n".join(lines)


def plan_json(*, diff: Diff, placements: tuple[PlacementPreview, ...]) -> dict[str, Any]:
    where = {p.instance: p for p in placements}
    changes = []
    for ch in diff.changes:
        item: dict[str, Any] = {
            "action": ch.action.value,
            "kind": ch.kind,
            "name": ch.name,
            "fields": [{"field": f.field, "old": f.old, "new": f.new} for f in ch.fields],
            "notes": list(ch.notes),
            "destructive": list(ch.destructive),
        }
        p = where.get(InstanceName(ch.name)) if ch.kind == "instance" else None
        if p is not None and ch.action is Action.CREATE:
            item["placement"] = {
                "primary": p.primary,
                "secondary": p.secondary,
                "refusal": p.refusal,
            }
        changes.append(item)
    return {
        "changes": changes,
        "problems": list(diff.problems),
        "drift": diff.drift,
        "has_changes": not diff.empty,
    }
