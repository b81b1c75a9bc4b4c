"""`corral capacity --htools FILE` against hspace on the corpus htools made
(`tests.support.htools.htools_corpus`): the same count of new instances, file
by file, with htools' own limits on a file (each node's spindle room, the
strict free-space checks, and hspace's rule of allocating nothing only where a
node already fails N+1; `reactors.htools.state`, docs/balance.md).

`EXPECTED` pins every count as measured (corral equal to hspace 3.0.2 on all
32 files hspace answers); a count that drifts on either side fails. `make test`
runs the committed fixtures (tests/fixtures/htools, both halves), `make bench`
(`-m slow`) every corpus file, generating what is missing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reactors.htools.state import (
    FAIL_SPINDLE_RATIO,
    HTOOLS_KEEP_FREE_MIB,
    spindle_room,
    to_state,
)
from reactors.htools.text import parse
from reactors.placement.capacity import Spec, capacity
from tests.support.htools.htools_corpus import corpus
from tests.support.htools.htools_tools import HTOOLS_BIN, PACKAGE
from tests.support.tools import require_tool

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "htools"
SPEC = Spec(memory_mib=1024, disk_mib=20480, vcpus=1)

# hspace 3.0.2's count of 1G/20G/1 DRBD instances on each corpus file (seed 0
# the tuning half, seed 1 held out), measured 2026-12-06; corral counts the same.
EXPECTED: dict[str, int] = {
    "hspace-10+2-s0": 32,
    "hspace-10+2-s1": 35,
    "tiered-16+3-stopped-s0": 48,
    "tiered-16+3-stopped-s1": 0,
    "std-24+4-stopped-s0": 80,
    "std-24+4-stopped-s1": 0,
    "std-36+4-stopped-s0": 64,
    "std-36+4-stopped-s1": 96,
    "running-16+3-s0": 48,
    "running-16+3-s1": 56,
    "running-36+4-s0": 118,
    "running-36+4-s1": 82,
    "groups-3x8-s0": 15,
    "groups-3x8-s1": 19,
    "racks-12+2-s0": 32,
    "racks-12+2-s1": 32,
    "spindles-10-s0": 15,
    "spindles-10-s1": 3,
    "util-12+2-s0": 38,
    "util-12+2-s1": 50,
    "partial-20+4-s0": 114,
    "partial-20+4-s1": 106,
    "templates-12+2-s0": 32,
    "templates-12+2-s1": 32,
    "skew-20+2-s0": 49,
    "skew-20+2-s1": 49,
    "offline-16-s0": 11,
    "offline-16-s1": 11,
    "n1-unhappy-16+2-s0": 0,
    "n1-unhappy-16+2-s1": 0,
    "n1-unhappy-24-s0": 0,
    "n1-unhappy-24-s1": 0,
}
# hspace 3.0.2 stops with an error on these (forthcoming instances: "internal
# inconsistency, allocated (N) != counted (M)"); corral's own count is pinned.
HSPACE_FAILS: dict[str, int] = {"forthcoming-8+1-s0": 8, "forthcoming-8+1-s1": 0}


def _corral(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "capacity",
            "--htools",
            str(path),
            "--spec",
            "1G,20G,1",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out


def _corral_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_corral(path, "--json").stdout)
    return doc


def _hspace(path: Path) -> int | None:
    """hspace's count, or None where it stops with an error."""
    hspace = require_tool(f"{HTOOLS_BIN}/hspace", PACKAGE)
    out = subprocess.run(
        [
            hspace,
            "-t",
            str(path),
            "--disk-template=drbd",
            "--standard-alloc=20480,1024,1",
            "--tiered-alloc=20480,1024,1",
            "--machine-readable",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    m = re.search(r"^HTS_ALLOC_INSTANCES=(\d+)$", out.stdout, re.MULTILINE)
    return int(m.group(1)) if out.returncode == 0 and m is not None else None


def check_file(path: Path, name: str) -> None:
    """corral's count is the pinned one, hspace's too (or hspace still fails
    where it did), and the per-node spindle room accounts for every copy."""
    doc = _corral_doc(path)
    if name in HSPACE_FAILS:
        assert doc["total"] == HSPACE_FAILS[name], (name, doc["total"])
        assert _hspace(path) is None, name
    else:
        assert doc["total"] == EXPECTED[name], (name, doc["total"], EXPECTED[name])
        assert _hspace(path) == EXPECTED[name], name
    rooms = {n["name"]: n for n in doc["nodes"]}
    assert len(rooms) == len(parse(path.read_text()).nodes)
    # every node of an htools file has a limit; each new instance takes one
    # copy of room on its primary and one on its secondary
    assert all(r["spindle_room"] is not None for r in rooms.values())
    taken = sum(r["spindle_room"] - r["spindle_room_after"] for r in rooms.values())
    assert taken == 2 * doc["total"], (name, taken, doc["total"])
    assert all(r["spindle_room_after"] >= 0 for r in rooms.values())


def _fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("*.data"))


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.stem)
def test_fixture_counts_as_hspace(path: Path) -> None:
    check_file(path, path.stem)


def test_the_spindle_ratio_is_what_stops_hspace_10_2() -> None:
    """hspace-10+2-s0: the ten full nodes hold 32 disk copies each (spindle
    ratio 32 x 1 spindle), so only the two empty ones take anything, 32 copies
    each: 32 instances, where disk and memory alone would fit about 239."""
    path = FIXTURES / "hspace-10+2-s0.data"
    doc = _corral_doc(path)
    rooms = {n["name"]: (n["spindle_room"], n["spindle_room_after"]) for n in doc["nodes"]}
    assert rooms.pop("node-new-01") == (32, 0) and rooms.pop("node-new-02") == (32, 0)
    assert set(rooms.values()) == {(0, 0)}
    assert doc["counted"] == "n+1-safe" and doc["total"] == 32
    assert f"{FAIL_SPINDLE_RATIO}: 132" in doc["tiers"][0]["stopped_by"]
    text = _corral(path).stdout
    assert "spindle room" in text and "node-new-01" in text and FAIL_SPINDLE_RATIO in text
    assert "total 32 more instances, N+1-safe" in text
    cluster = parse(path.read_text())
    loose = capacity(state=to_state(cluster=cluster), specs=(SPEC,))
    assert loose.total > 100  # corral's own rules, without the policy


def test_htools_never_leave_zero_free() -> None:
    """offline-16-s0: every node's free disk is a multiple of 20 GiB, so the
    last copy on each would leave exactly 0 MiB, which htools refuse (11, as
    hspace); with 0 MiB allowed, more fit."""
    path = FIXTURES / "offline-16-s0.data"
    cluster = parse(path.read_text())
    state, room = to_state(cluster=cluster), spindle_room(cluster=cluster)

    def count(keep: int) -> int:
        return capacity(state=state, specs=(SPEC,), spindle_room=room, keep_free_mib=keep).total

    assert count(HTOOLS_KEEP_FREE_MIB) == EXPECTED["offline-16-s0"]
    assert count(0) > EXPECTED["offline-16-s0"]


def test_a_cluster_that_cannot_lose_a_node_counts_as_hspace() -> None:
    """spindles-10-s1: no node fails N+1, but the cluster cannot lose any node
    (a failover would take spindles an exclusive-storage node lacks). hspace
    stops only on a node failing N+1, so it allocates; corral says what fails
    first, counts as hspace (3), and does not call the result N+1-safe."""
    path = FIXTURES / "spindles-10-s1.data"
    doc = _corral_doc(path)
    assert doc["n1_failures_before"] == [] and len(doc["cannot_lose"]) == 10
    assert doc["counted"].startswith("as hspace") and doc["total"] == 3
    text = _corral(path).stdout
    assert text.startswith("the cluster already fails N+1:")
    assert "losing any of 10 node(s)" in text and "N+1-safe" not in text
    failing = _corral_doc(FIXTURES / "n1-unhappy-16+2-s1.data")
    assert failing["n1_failures_before"] and failing["total"] == 0
    assert failing["counted"] == "as hspace: 0 on a cluster failing N+1"


@pytest.mark.slow
# every corpus file through hspace and corral: over the default 300 s when the
# machine is shared (make bench ran it at load 2-3 and it timed out)
@pytest.mark.timeout(1800)
def test_every_corpus_file_counts_as_hspace() -> None:
    require_tool(f"{HTOOLS_BIN}/hspace", PACKAGE)
    names = set()
    for item in corpus():
        names.add(item.name)
        check_file(item.path, item.name)
    assert names == set(EXPECTED) | set(HSPACE_FAILS)
