"""corral's allocator against hail, and `corral capacity` against hspace, on the
corpus htools made (`tests.support.htools.htools_corpus`; seed 0 the tuning half,
seed 1 held out), side by side in one run.

Allocation: on each file as it is (as corral reads it, `reactors.htools.state`),
one request of each of three sizes (1G/20G/1, 4G/80G/2, 16G/200G/8 DRBD),
answered by `choose_pair` and by the real hail (capacity checks on, as Ganeti
runs it); each answer's cluster scored by `reactors.htools.score`. The
target: corral's score no higher wherever hail places, and corral placing
wherever hail does. Hail sees nodes with 4 spindles, as in `bench.htools.alloc`.

Capacity: `hspace -t FILE --disk-template drbd --standard-alloc=20480,1024,1`
(its tiered run given the same spec, so it does not search down from the
policy's maximum) against `corral capacity --htools FILE --spec 1G,20G,1`
(a fresh process each); counts and times (wall and CPU, `bench.timing.child_time`), the
target count ≥ and CPU time ≤ 1/10 (the ratio the machine's load hardly moves),
and whether the counts are equal (on a file corral keeps htools' own limits,
`tests/parity/test_capacity_corpus.py` pins them).

Not imported by corral; run by `make bench` or `python -m bench alloc_corpus`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.timing.bytecode import compile_corral
from bench.timing.child_time import Timed, run_timed
from events.ids import InstanceName
from events.specs import DiskSpec, InstanceSpec
from reactors.htools.model import from_state
from reactors.htools.score import score
from reactors.htools.state import to_state
from reactors.htools.text import parse
from reactors.placement.allocator import choose_pair
from tests.support.htools.htools_corpus import corpus
from tests.support.htools.htools_tools import HAIL, HTOOLS_BIN, iallocator_request, run_hail
from tests.support.states.generated import place

_CLI = (sys.executable, "-m", "orchestrator.cli.main")
HAIL_SPINDLES = 4
SIZES = ((1024, 20480, 1), (4096, 81920, 2), (16384, 204800, 8))


def _spec(mem: int, dsk: int, cpus: int) -> InstanceSpec:
    return InstanceSpec(
        name=InstanceName(f"request-{mem}"),
        memory_mib=mem,
        vcpus=cpus,
        disks=(DiskSpec(size_mib=dsk),),
    )


def _allocations(path: Path, tmp: Path) -> dict[str, int]:
    """Per request: both place and corral scores no higher; hail places and
    corral refuses; corral places and hail refuses; both refuse; corral higher."""
    state = to_state(cluster=parse(path.read_text()))
    out = {"both, corral ≤": 0, "both, corral >": 0, "hail only": 0, "corral only": 0, "neither": 0}
    for mem, dsk, cpus in SIZES:
        spec = _spec(mem, dsk, cpus)
        ours = choose_pair(state=state, spec=spec)
        message = iallocator_request(state, spec, spindle_count=HAIL_SPINDLES)
        theirs = run_hail(hail=HAIL, message=message, path=tmp / "request.json")
        placed_ours = ours.primary is not None and ours.secondary is not None
        if not theirs.success or theirs.primary is None or theirs.secondary is None:
            out["corral only" if placed_ours else "neither"] += 1
            continue
        if not placed_ours:
            out["hail only"] += 1
            continue
        assert ours.primary is not None and ours.secondary is not None
        mine = score(from_state(state=place(state, spec, ours.primary, ours.secondary))).total
        hails = score(from_state(state=place(state, spec, theirs.primary, theirs.secondary))).total
        out["both, corral ≤" if mine <= hails + 1e-9 else "both, corral >"] += 1
    return out


def _hspace(path: Path) -> tuple[int, Timed] | str:
    """hspace's count and time, or the error it stops with (hspace 3.0.2 fails
    on some files, e.g. "internal inconsistency, allocated (90) != counted
    (86)" on one with forthcoming instances)."""
    try:
        ran = run_timed(
            [
                f"{HTOOLS_BIN}/hspace",
                "-t",
                str(path),
                "--disk-template=drbd",
                "--standard-alloc=20480,1024,1",
                "--tiered-alloc=20480,1024,1",
                "--machine-readable",
            ],
            timeout=1800,
        )
    except RuntimeError as err:
        return str(err).splitlines()[-1].strip()
    m = re.search(r"^HTS_ALLOC_INSTANCES=(\d+)$", ran.stdout, re.MULTILINE)
    assert m is not None, ran.stdout
    return int(m.group(1)), ran


def _corral(path: Path, *extra: str) -> tuple[int, Timed, dict[str, Any]]:
    ran = run_timed(
        [*_CLI, "capacity", "--htools", str(path), "--spec", "1G,20G,1", "--json", *extra],
        timeout=1800,
    )
    doc = json.loads(ran.stdout)
    return int(doc["total"]), ran, doc


def run() -> dict[str, Any]:
    compile_corral()
    header: list[object] = [
        "half",
        "file",
        "capacity corral / hspace",
        "wall corral / hspace",
        "CPU corral / hspace",
        "hspace ÷ corral CPU (wall)",
        "load",
        "count = / ≥ / CPU ≤ 1/10",
        "fails N+1 (nodes); without new failures",
        "requests: both place corral ≤ / >, hail only, corral only, neither",
    ]
    rows: list[list[object]] = [header]
    records: list[dict[str, Any]] = []
    halves = [h for h in ("tuning", "held-out") if os.environ.get("CORRAL_BENCH_HALF", h) == h]
    for half in halves:
        for item in (f for f in corpus() if f.half == half):
            count, took, doc = _corral(item.path)
            ref = _hspace(item.path)
            if isinstance(ref, str):
                cells: list[object] = [half, item.name, f"{count} / hspace failed: {ref}"]
                rows.append(cells + [""] * (len(header) - len(cells)))
                records.append({"file": item.name, "half": half, "hspace_error": ref})
                continue
            h_count, h_took = ref
            failing = doc["n1_failures_before"]
            extra = ""
            if failing:
                more, _, _ = _corral(item.path, "--without-new-n1-failures")
                extra = f"yes ({len(failing)}); {more}"
            with tempfile.TemporaryDirectory(prefix="alloc-") as tmp:
                allocs = _allocations(item.path, Path(tmp))
            met = (count >= h_count, took.cpu_s * 10 <= h_took.cpu_s)
            rows.append(
                [
                    half,
                    item.name,
                    f"{count} / {h_count}",
                    f"{took.wall_s:.2f} / {h_took.wall_s:.2f} s",
                    f"{took.cpu_s:.2f} / {h_took.cpu_s:.2f} s",
                    f"{h_took.cpu_s / took.cpu_s:.1f}× ({h_took.wall_s / took.wall_s:.1f}×)",
                    f"{took.load:.1f}",
                    " / ".join("yes" if m else "NO" for m in (count == h_count, *met)),
                    extra or "no",
                    " / ".join(str(v) for v in allocs.values()),
                ]
            )
            print("  ".join(str(c) for c in rows[-1]), flush=True)
            records.append(
                {
                    "file": item.name,
                    "half": half,
                    "capacity": {"corral": count, "hspace": h_count},
                    "seconds": {"corral": took.wall_s, "hspace": h_took.wall_s},
                    "cpu_s": {"corral": took.cpu_s, "hspace": h_took.cpu_s},
                    "load": took.load,
                    "n1_failures_before": failing,
                    "requests": allocs,
                    "met": met,
                }
            )
    return {"table": rows, "files": records}
