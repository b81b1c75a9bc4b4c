"""corral's balancer against hbal on the corpus htools made
(`tests.support.htools.htools_corpus`: 17 recipes, 8 to 40 nodes, seed 0 the tuning
half and seed 1 the held-out half), side by side in one run.

Per file: `hbal -t FILE [-U UTIL] -S OUT -C` (once per node group, `-G GROUP`,
each run on the last one's saved file, when the file has several groups),
and `corral balance --plan --htools FILE [-U UTIL] --write-htools OUT --json`
as a user runs it (a fresh process). Reported: the start score; the final
score of each as the reference scores its saved file (`hinfo -t`, or with a
utilisation file `hbal -U UTIL -l 0`'s initial score, since hinfo takes no
`-U`), and hbal's own final score as it printed it (its in-memory model: on a
file whose free memory disagrees with its instances the saved file scores
differently, see docs/htools.md); moves as hbal counts them; data copied (an
instance's disk per new secondary); wall time; and whether corral meets the
target (its final no higher than hbal's printed final, its moves no more than
hbal's, its time at most 1/20 of hbal's).

Not imported by corral; run by `make bench` or `python -m bench balance_corpus`.
`CORRAL_BENCH_CORPUS=name,name` runs only the recipes named,
`CORRAL_BENCH_HALF=tuning` (or `held-out`) only that half.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.timing.bytecode import compile_corral
from bench.timing.child_time import run_timed
from reactors.htools.score import score
from reactors.htools.text import parse
from reactors.htools.utilisation import parse_utilisation, with_utilisation
from tests.support.htools.htools_corpus import RECIPES, CorpusFile, corpus
from tests.support.htools.htools_tools import HTOOLS_BIN

_CLI = (sys.executable, "-m", "orchestrator.cli.main")
HBAL_TIMEOUT_S = 1800.0
_LINE = re.compile(r"^\s*\d+\. (\S+)\s+\S+ => \S+\s+\S+ a=(.*)$", re.MULTILINE)
_TARGET_SPEED = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One tool's balance of one file."""

    final: float  # as the reference scores the saved file
    printed: float  # as the tool said
    moves: int
    data_mib: int
    seconds: float
    cpu_s: float
    load: float
    saved: Path


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HBAL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()[:500]}")
    return done.stdout


def reference_score(path: Path, util: Path | None) -> float:
    """htools' score of a file: hinfo's, or with a utilisation file hbal's
    initial score with it (hinfo has no -U)."""
    if util is None:
        out = _run([f"{HTOOLS_BIN}/hinfo", "-t", str(path)])
        m = re.search(r"^Cluster score: (\S+)$", out, re.MULTILINE)
    else:
        out = _run([f"{HTOOLS_BIN}/hbal", "-t", str(path), "-U", str(util), "-l", "0"])
        m = re.search(r"Initial score: (\S+)", out)
    assert m is not None, out
    return float(m.group(1))


def _groups(text: str) -> list[str]:
    cluster = parse(text)
    seen: list[str] = []
    for n in cluster.nodes:
        if n.group not in seen:
            seen.append(n.group)
    return seen


def _merge_groups(original: str, saved: list[str]) -> str:
    """The original file with the node and instance lines of each group's saved
    file put in (`hbal -G G -S` saves only that group's nodes and instances)."""
    lines: dict[str, str] = {}
    for text in saved:
        sections = text.split("\n\n")
        for block in sections[1:3]:
            for line in block.splitlines():
                lines[line.split("|", 1)[0]] = line
    sections = original.split("\n\n")
    for k in (1, 2):
        sections[k] = "\n".join(
            lines.get(line.split("|", 1)[0], line) for line in sections[k].split("\n")
        )
    return "\n\n".join(sections)


def run_hbal(item: CorpusFile, work: Path) -> Outcome:
    """hbal on the file, once per node group (`-G`) when it has several, each on
    the original file; the groups' saved files put together."""
    text = item.path.read_text()
    disks = {i.name: i.dsk for i in parse(text).instances}
    groups = _groups(text)
    src = work / "hbal.in"
    src.write_text(text)
    util = ["-U", str(item.utilisation)] if item.utilisation else []
    moves = data = 0
    printed = float("nan")
    seconds = cpu = 0.0
    load = os.getloadavg()[0]
    saved: list[str] = []
    for k, group in enumerate(groups):
        base = work / f"hbal{k}"
        select = ["-G", group] if len(groups) > 1 else []
        ran = run_timed(
            [f"{HTOOLS_BIN}/hbal", "-t", str(src), *util, *select, "-S", str(base), "-C"],
            timeout=HBAL_TIMEOUT_S,
        )
        out = ran.stdout
        seconds += ran.wall_s
        cpu += ran.cpu_s
        for name, actions in _LINE.findall(out):
            moves += 1
            data += disks[name] * sum(1 for a in actions.split() if a.startswith("r:"))
        final = re.search(r"Cluster score improved from \S+ to (\S+)", out)
        initial = re.search(r"Initial score: (\S+)", out)
        assert initial is not None, out
        printed = float(final.group(1) if final else initial.group(1))
        if Path(f"{base}.balanced").exists():  # nothing saved when nothing was to do
            saved.append(Path(f"{base}.balanced").read_text())
    result = work / "hbal.out"
    result.write_text(_merge_groups(text, saved) if len(groups) > 1 else (saved or [text])[0])
    final_score = reference_score(result, item.utilisation)
    return Outcome(
        final=final_score,
        # with several groups hbal prints each group's score, not the cluster's
        printed=final_score if len(groups) > 1 else printed,
        moves=moves,
        data_mib=data,
        seconds=seconds,
        cpu_s=cpu,
        load=load,
        saved=result,
    )


def run_corral(item: CorpusFile, work: Path) -> tuple[Outcome, dict[str, Any]]:
    saved = work / "corral.out"
    util = ["-U", str(item.utilisation)] if item.utilisation else []
    argv = [*_CLI, "balance", "--plan", "--htools", str(item.path), *util]
    ran = run_timed([*argv, "--write-htools", str(saved), "--json"], timeout=HBAL_TIMEOUT_S)
    doc = json.loads(ran.stdout)
    return (
        Outcome(
            final=reference_score(saved, item.utilisation),
            printed=float(doc["score_after"]),
            moves=int(doc["moves_as_hbal"]),
            data_mib=int(doc["data_moved_mib"]),
            seconds=ran.wall_s,
            cpu_s=ran.cpu_s,
            load=ran.load,
            saved=saved,
        ),
        doc,
    )


def _start(item: CorpusFile) -> float:
    cluster = parse(item.path.read_text())
    if item.utilisation is not None:
        cluster = with_utilisation(cluster, parse_utilisation(item.utilisation.read_text()))
    return score(cluster).total


def _plain(o: Outcome) -> dict[str, Any]:
    return {k: v for k, v in asdict(o).items() if k != "saved"}


def _gib(mib: int) -> str:
    return f"{mib / 1024:,.0f}"


def _met(ours: Outcome, theirs: Outcome) -> tuple[bool, bool, bool]:
    return (
        ours.final <= theirs.printed + 1e-9,
        ours.moves <= theirs.moves,
        ours.cpu_s * _TARGET_SPEED <= theirs.cpu_s,
    )


def _ratio(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.1f}×" if ours > 0 else "-"


def _row(
    half: str, item: CorpusFile, *, cluster_size: str, start: float, ours: Outcome, theirs: Outcome
) -> list[object]:
    return [
        half,
        item.name,
        cluster_size,
        f"{start:.4f}",
        f"{ours.final:.4f}",
        f"{theirs.printed:.4f}; {theirs.final:.4f}",
        f"{ours.moves} / {theirs.moves}",
        f"{_gib(ours.data_mib)} / {_gib(theirs.data_mib)}",
        f"{ours.seconds:.2f} / {theirs.seconds:.2f} s",
        f"{ours.cpu_s:.2f} / {theirs.cpu_s:.2f} s",
        f"{_ratio(theirs.cpu_s, ours.cpu_s)} ({_ratio(theirs.seconds, ours.seconds)})",
        f"{ours.load:.1f}",
        " / ".join("yes" if m else "NO" for m in _met(ours, theirs)),
    ]


HEADER: list[object] = [
    "half",
    "file",
    "nodes / inst",
    "start",
    "corral final",
    "hbal final (printed; saved)",
    "moves corral / hbal",
    "data GiB corral / hbal",
    "wall corral / hbal",
    "CPU corral / hbal",
    "hbal ÷ corral CPU (wall)",
    "load",
    "score ≤ / moves ≤ / CPU ≤ 1/20",
]


def run() -> dict[str, Any]:
    wanted = os.environ.get("CORRAL_BENCH_CORPUS")
    halves = [h for h in ("tuning", "held-out") if os.environ.get("CORRAL_BENCH_HALF", h) == h]
    recipes = [r for r in RECIPES if not wanted or r.name in wanted.split(",")]
    files = corpus(recipes=recipes)
    compile_corral()
    rows: list[list[object]] = [HEADER]
    records: list[dict[str, Any]] = []
    for half in halves:
        for item in (f for f in files if f.half == half):
            cluster = parse(item.path.read_text())
            with tempfile.TemporaryDirectory(prefix="corpus-") as tmp:
                work = Path(tmp)
                start = _start(item)
                ours, doc = run_corral(item, work)
                theirs = run_hbal(item, work)
                # corral's prediction of the saved file's score is what htools say
                assert abs(ours.final - ours.printed) <= 1e-6, (item.name, ours)
            size = f"{len(cluster.nodes)} / {len(cluster.instances)}"
            rows.append(_row(half, item, cluster_size=size, start=start, ours=ours, theirs=theirs))
            records.append(
                {
                    "file": item.name,
                    "half": half,
                    "features": list(item.recipe.features()),
                    "nodes": len(cluster.nodes),
                    "instances": len(cluster.instances),
                    "start": start,
                    "corral": _plain(ours) | {"search": doc["search"]},
                    "hbal": _plain(theirs),
                    "met": _met(ours, theirs),
                }
            )
            print("  ".join(str(c) for c in rows[-1]), flush=True)
    summary = {
        half: {
            "files": sum(1 for r in records if r["half"] == half),
            "score": sum(1 for r in records if r["half"] == half and r["met"][0]),
            "moves": sum(1 for r in records if r["half"] == half and r["met"][1]),
            "time": sum(1 for r in records if r["half"] == half and r["met"][2]),
            "all": sum(1 for r in records if r["half"] == half and all(r["met"])),
        }
        for half in halves
    }
    for half, s in summary.items():
        rows.append(
            [
                half,
                "files meeting each target",
                f"{s['files']} files",
                *([""] * 9),
                f"{s['score']} / {s['moves']} / {s['time']} (all: {s['all']})",
            ]
        )
    return {"table": rows, "files": records, "summary": summary}
