"""The desired-state file: YAML that declares a cluster (its policy, groups, nodes with
their fence agents, and instances), loaded into an `events.specs.DesiredCluster` after
checking everything that can be checked without the live cluster. Every problem is
collected, with file, line, column and field, and reported at once; nothing is
returned when any exists. The format is documented in docs/desired-state.md.

Must not: do I/O in `parse_desired` (only `load_desired` reads files), read or log
secrets (fence secrets are refused: they are the orchestrator hosts'; no message
repeats an option value), or raise anything but `DesiredFileError` for any input.
The sections are read by `orchestrator.desired.sections` and
`orchestrator.desired.instances`, field by field with `orchestrator.desired.schema`.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from events.ids import InstanceName, NodeName
from events.specs import DesiredCluster, HvParams, ImageSpec
from orchestrator.desired import schema as s
from orchestrator.desired.images import read_images
from orchestrator.desired.instances import read_instances
from orchestrator.desired.nesting import MAX_FLOW_DEPTH, too_deep
from orchestrator.desired.schema import (
    MAX_PROBLEMS,
    At,
    FileProblem,
    Problems,
    TooManyProblems,
    YamlMapping,
)
from orchestrator.desired.sections import read_cluster, read_groups, read_nodes

__all__ = ["DesiredFile", "DesiredFileError", "FileProblem", "load_desired", "parse_desired"]

_TOP_KEYS = ("cluster", "groups", "nodes", "instances", "images")


class DesiredFileError(Exception):
    """A desired-state file (or directory) with problems; `problems` has all of them,
    sorted by file, line and column; str() gives one per line."""

    def __init__(self, problems: Sequence[FileProblem]) -> None:
        self.problems: tuple[FileProblem, ...] = tuple(
            sorted(dict.fromkeys(problems), key=lambda p: (p.file, p.line, p.column))
        )
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredFile:
    cluster: DesiredCluster
    absent: frozenset[InstanceName]  # `state: absent`: to remove; not in cluster.instances
    digest: str  # sha256 hex of the file bytes (a directory: of "name\0bytes" per file)
    files: tuple[str, ...]
    # Accepted, but worth saying (`corral plan`/`apply` print them): e.g. a
    # mac_prefix that is not locally administered.
    warnings: tuple[FileProblem, ...] = ()


@dataclass(slots=True, kw_only=True)
class _Raw:
    """The top-level sections of all files, with positions, before checking."""

    clusters: list[tuple[Any, At, At]] = field(default_factory=list)  # value, value at, key at
    groups: list[tuple[int, Any, At]] = field(default_factory=list)
    nodes: list[tuple[int, Any, At]] = field(default_factory=list)
    instances: list[tuple[int, Any, At]] = field(default_factory=list)
    images: list[tuple[int, Any, At]] = field(default_factory=list)


def parse_desired(texts: Sequence[tuple[str, str]]) -> DesiredFile:
    """Pure: (filename, text) pairs -> DesiredFile, or raise DesiredFileError with every
    problem. No I/O. Several pairs are merged as the files of one directory."""
    problems = Problems()
    try:
        result = _parse(problems, texts)
    except TooManyProblems:
        last = problems.items[-1]
        problems.items.append(
            replace(last, message=f"checking stopped after {MAX_PROBLEMS} problems", field="file")
        )
        result = None
    except Exception as exc:  # a bug here must still come out as a DesiredFileError
        first = texts[0][0] if texts else "<none>"
        problems.add(
            At(file=first, line=1, column=1, field="file"),
            f"internal error while checking the file ({type(exc).__name__}); please report it",
        )
        result = None
    if problems.items or result is None:
        raise DesiredFileError(problems.sorted())
    return result


def load_desired(path: Path) -> DesiredFile:
    """A .yaml/.yml file, or a directory whose *.yaml/*.yml files (sorted, not
    recursive) are merged. Unreadable path / empty directory -> DesiredFileError naming
    the path (line 0, column 0)."""

    def fail(where: Path, message: str) -> DesiredFileError:
        return DesiredFileError(
            [FileProblem(file=str(where), line=0, column=0, field="file", message=message)]
        )

    try:
        if path.is_dir():
            files = sorted(
                (p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()),
                key=lambda p: p.name,
            )
            if not files:
                raise fail(path, "the directory has no *.yaml or *.yml files")
        else:
            files = [path]
        texts: list[tuple[str, str]] = []
        for file in files:
            data = file.read_bytes()
            try:
                texts.append((str(file), data.decode("utf-8")))
            except UnicodeDecodeError as exc:
                line = data[: exc.start].count(b"\n") + 1
                raise DesiredFileError(
                    [
                        FileProblem(
                            file=str(file),
                            line=line,
                            column=1,
                            field="file",
                            message="the file is not UTF-8 text",
                        )
                    ]
                ) from None
    except OSError as exc:
        raise fail(Path(exc.filename) if exc.filename else path, exc.strerror or str(exc)) from None
    return parse_desired(texts)


def _digest(texts: Sequence[tuple[str, str]]) -> str:
    if len(texts) == 1:
        return hashlib.sha256(texts[0][1].encode("utf-8", "surrogatepass")).hexdigest()
    h = hashlib.sha256()
    for name, text in sorted(texts, key=lambda t: Path(t[0]).name):
        h.update(Path(name).name.encode("utf-8", "surrogatepass") + b"\0")
        h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _parse(problems: Problems, texts: Sequence[tuple[str, str]]) -> DesiredFile | None:
    raw = _Raw()
    for file, text in texts:
        _sections(problems, raw, file, _load_yaml(problems, file, text))
    if not texts:
        problems.add(At(file="<none>", line=1, column=1, field="file"), "no files given")
        return None
    if problems.items:
        # A file that is not YAML may hold anything: checking the others against it
        # would only add noise ("cluster missing", "node not declared").
        return None
    if not raw.clusters:
        problems.add(
            At(file=texts[0][0], line=1, column=1, field="cluster"),
            "the `cluster:` section is missing; exactly one file must declare it "
            "(at least its name)",
        )
        return None
    for _, _, key_at in raw.clusters[1:]:
        problems.add(
            key_at,
            f"`cluster:` is declared twice (first at {raw.clusters[0][2].line_ref(key_at)}); "
            "declare it in exactly one file",
        )
    cluster_value, cluster_at, _ = raw.clusters[0]
    header = read_cluster(problems, cluster_value, cluster_at)
    groups = read_groups(problems, raw.groups)
    nodes = read_nodes(problems, raw.nodes, header.node_defaults, groups)
    declared = frozenset(
        str(item["name"])
        for _, item, _ in raw.nodes
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    )

    def hv_base(primary: NodeName | None) -> HvParams:
        node = nodes.get(primary) if primary else None
        group = groups.get(node[0].group) if node else None
        return group.hv.over(header.policy.hv) if group else header.policy.hv

    catalogue = read_images(problems, raw.images)
    instances = read_instances(
        problems,
        raw.instances,
        header.instance_defaults,
        nodes,
        declared,
        hv_base=hv_base,
        catalogue=catalogue,
    )
    if problems.items or header.name is None:
        return None
    return DesiredFile(
        cluster=DesiredCluster(
            name=header.name,
            policy=header.policy,
            groups=groups,
            nodes={n: spec for n, (spec, _) in nodes.items()},
            instances={i.name: i.spec for i in instances if i.spec is not None},
            etcd_endpoints=header.etcd,
            images=catalogue.images,
        ),
        absent=frozenset(i.name for i in instances if i.absent),
        digest=_digest(texts),
        files=tuple(name for name, _ in texts),
        warnings=tuple(dict.fromkeys(problems.warnings)),
    )


def _load_yaml(problems: Problems, file: str, text: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    at = At(file=file, line=1, column=1, field="yaml")
    deep = too_deep(text)
    if deep is not None:
        problems.add(
            at.moved(line=deep.line, column=deep.column),
            f"the YAML is nested too deeply (more than {MAX_FLOW_DEPTH} levels of [ ] or {{ }})",
        )
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return yaml.load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        key = re.search(r'duplicate key "(.*?)"', str(exc.problem or ""))
        problems.add(
            at.moved(line=mark.line + 1, column=mark.column + 1) if mark else at,
            f"duplicate key {key.group(1)[:40]!r}"
            if key
            else "duplicate key; a key may appear only once in a mapping",
        )
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        context = " ".join(str(exc.context or "").split())
        if context and exc.problem:
            what = f"{what} ({context})"
        problems.add(
            at.moved(line=mark.line + 1, column=mark.column + 1) if mark else at,
            f"YAML syntax error: {what}",
        )
    except YAMLError as exc:
        position = getattr(exc, "position", None)
        if isinstance(position, int):
            before = text[:position]
            at = at.moved(line=before.count("\n") + 1, column=position - before.rfind("\n"))
        reason = getattr(exc, "reason", None) or "invalid YAML"
        problems.add(at, f"YAML error: {' '.join(str(reason).split())}")
    except RecursionError:
        problems.add(at, "the YAML is nested too deeply")
    except Exception as exc:  # ruamel's constructors raise ValueError etc. for bad scalars
        problems.add(at, f"a value cannot be read as YAML ({type(exc).__name__}: {exc})"[:200])
    return None


def _sections(problems: Problems, raw: _Raw, file: str, doc: Any) -> None:
    at = At(file=file, line=1, column=1, field="")
    if doc is None:
        return
    top = YamlMapping(problems, doc, at, allowed=_TOP_KEYS, what="the file")
    if not top.ok:
        return
    if top.has("cluster"):
        value, value_at = top.get("cluster")
        raw.clusters.append((value, value_at, top.key_at("cluster")))
    for key, into in (
        ("groups", raw.groups),
        ("nodes", raw.nodes),
        ("instances", raw.instances),
        ("images", raw.images),
    ):
        if top.has(key):
            value, value_at = top.get(key)
            for i, item, item_at in s.items(problems, value, value_at, what=key):
                label = _label(item, i, key)
                into.append(
                    (
                        i,
                        item,
                        item_at.moved(
                            line=item_at.line, column=item_at.column, field=f"{key}[{label}]"
                        ),
                    )
                )


def _label(item: Any, index: int, key: str = "") -> str:
    """How a list entry is named in field paths: its name when it has a valid one
    (an image's may be a Ganeti OS definition's NAME+VARIANT)."""
    if isinstance(item, dict):
        name = item.get("name")
        valid = s.rule(ImageSpec, "name") if key == "images" else s.name("name")
        if isinstance(name, str) and valid(Problems(), name, _NOWHERE) is not None:
            return str(name)
    return str(index)


_NOWHERE = At(file="", line=1, column=1, field="")
