"""corral's balancer against hbal over many generated clusters, not a chosen few:
for each cluster shape, several seeds; for each, corral's greedy search alone
(`--lookahead 0`) and hbal on the same htools file, and how often corral's
final score, move count and data copied are no worse than hbal's; the same for
corral's default (`--searches auto`: score and moves, and which of its plans
it kept), and both sets of searches it picks between (`--searches full` and
`--searches quick`). The figures
of `bench.htools.balance` are four clusters; this is the spread around them.

Each cluster: `tests.support.states.generated.generated_cluster` (two node sizes, `svc:*`
exclusion tags, uneven N+1-safe placement, empty nodes added; drained rows have
one drained node). hbal runs as `hbal -t FILE -S OUT`; both final placements are
scored by `reactors.htools.score` on the start cluster.

Not imported by corral; run by `make bench` or `python -m bench balance_seeds`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.htools.balance import MEMORY, _in_racks, data_moved
from reactors.balance.cores import plan_on_cores
from reactors.balance.plan import BalancePlan, plan_balance, which_searches
from reactors.htools.score import score
from reactors.htools.text import render
from tests.support.htools.htools_tools import run_hbal
from tests.support.states.generated import generated_cluster, with_placement

# (label, full nodes, empty nodes, instances, drained, racks, memory, seeds):
# `generated_cluster`'s instance memory sizes; 0 racks: no location tags. The
# last three shapes are the size of `bench.htools.balance`'s 16-node rows (its
# memory sizes; the generator places fewer instances than asked where the
# nodes fill up), with other seeds.
_MEMORY = (512, 1024, 2048, 2048, 4096, 8192)  # `generated_cluster`'s default
SHAPES: tuple[tuple[str, int, int, int, bool, int, tuple[int, ...], range], ...] = (
    ("8 nodes (7+1), 70 instances", 7, 1, 70, False, 0, _MEMORY, range(101, 111)),
    ("8 nodes (6+2), 60 instances, drained", 6, 2, 60, True, 0, _MEMORY, range(101, 111)),
    ("16 nodes (13+3), 200 instances", 13, 3, 200, False, 0, _MEMORY, range(101, 106)),
    ("16 nodes (12+4), 180 instances, drained", 12, 4, 180, True, 0, _MEMORY, range(101, 106)),
    ("16 nodes (13+3), 300 instances", 13, 3, 300, False, 0, MEMORY, range(101, 106)),
    ("16 nodes (13+3), 380-500 instances", 13, 3, 520, False, 0, MEMORY, range(101, 106)),
    ("16 nodes (13+3), 380-500 instances, 4 racks", 13, 3, 520, False, 4, MEMORY, range(101, 106)),
)
# Scores equal within this are a tie (both are sums of float statistics).
TIE = 1e-6


def run() -> dict[str, Any]:
    table: list[list[Any]] = [
        [
            "shape",
            "clusters",
            "greedy: score <= hbal",
            "greedy: moves <= hbal",
            "greedy: both",
            "greedy: data <= hbal",
            "moves greedy/hbal (median)",
            "score diff greedy-hbal (median)",
            "hbal time / greedy (median)",
            "default (--searches auto): its set: score / moves / both / data <= hbal",
            "hbal time / default (median)",
            "default kept: greedy / greedy, less data / lookahead / pairs / frugal plan",
            "--searches full: score / moves / both / data <= hbal (totals; time)",
            "--searches quick: the same",
            "hbal totals",
        ]
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, full, empty, count, drained, racks, memory, seeds in SHAPES:
            results: list[dict[str, Any]] = []
            for seed in seeds:
                start = generated_cluster(
                    seed=seed,
                    full=full,
                    empty=empty,
                    instances=count,
                    drained=drained,
                    memory=memory,
                )
                if racks:
                    start = _in_racks(start, racks)
                path = Path(tmp) / f"c{seed}.data"
                path.write_text(render(start))
                t0 = time.perf_counter()
                plan = plan_balance(cluster=start, lookahead=0)
                ours_s = time.perf_counter() - t0
                # both sets of searches as `corral balance` runs them
                # (`plan_on_cores`); the default is the one "auto" picks here
                sets: dict[str, tuple[BalancePlan, float]] = {}
                for which in ("full", "quick"):
                    t0 = time.perf_counter()
                    plan = plan_on_cores(cluster=start, search_set=which).plan
                    sets[which] = (plan, time.perf_counter() - t0)
                auto = which_searches(asked="auto", lookahead=3, cluster=start)
                ahead, ahead_s = sets[auto]
                hbal = run_hbal(path=path)
                assert hbal.balanced is not None
                theirs = with_placement(start, hbal.balanced)
                results.append(
                    {
                        "seed": seed,
                        "instances": len(start.instances),
                        "greedy_score": plan.score_after,
                        "hbal_score": score(theirs).total,
                        # as hbal counts them (a relocation is two)
                        "greedy_moves": plan.moves_as_hbal,
                        "hbal_moves": hbal.moves,
                        "greedy_data_mib": plan.data_mib,
                        "hbal_data_mib": data_moved(start, theirs),
                        "greedy_seconds": round(ours_s, 3),
                        "hbal_seconds": round(hbal.seconds, 3),
                        "default_searches": auto,
                        "default_score": ahead.score_after,
                        "default_moves": ahead.moves_as_hbal,
                        "default_data_mib": ahead.data_mib,
                        "default_search": ahead.search,
                        "default_seconds": round(ahead_s, 3),
                        **{
                            f"{which}_{key}": value
                            for which, (p, secs) in sets.items()
                            for key, value in (
                                ("score", p.score_after),
                                ("moves", p.moves_as_hbal),
                                ("data_mib", p.data_mib),
                                ("search", p.search),
                                ("seconds", round(secs, 3)),
                            )
                        },
                    }
                )
            n = len(results)
            score_ok = [r["greedy_score"] <= r["hbal_score"] + TIE for r in results]
            moves_ok = [r["greedy_moves"] <= r["hbal_moves"] for r in results]
            data_ok = [r["greedy_data_mib"] <= r["hbal_data_mib"] for r in results]
            moves_ratio = statistics.median(r["greedy_moves"] / r["hbal_moves"] for r in results)
            score_diff = statistics.median(r["greedy_score"] - r["hbal_score"] for r in results)
            speed = statistics.median(r["hbal_seconds"] / r["greedy_seconds"] for r in results)
            la_score = [r["default_score"] <= r["hbal_score"] + TIE for r in results]
            la_moves = [r["default_moves"] <= r["hbal_moves"] for r in results]
            la_both = sum(a and b for a, b in zip(la_score, la_moves, strict=True))
            la_data = sum(r["default_data_mib"] <= r["hbal_data_mib"] for r in results)
            la_speed = statistics.median(r["hbal_seconds"] / r["default_seconds"] for r in results)
            per_set = {which: _against_hbal(results, which) for which in ("full", "quick")}
            table.append(
                [
                    label,
                    n,
                    f"{sum(score_ok)}/{n}",
                    f"{sum(moves_ok)}/{n}",
                    f"{sum(a and b for a, b in zip(score_ok, moves_ok, strict=True))}/{n}",
                    f"{sum(data_ok)}/{n}",
                    f"{moves_ratio:.3f}",
                    f"{score_diff:+.4f}",
                    f"{speed:.1f}x",
                    f"{results[0]['default_searches']}: "
                    f"{sum(la_score)}/{n} / {sum(la_moves)}/{n} / {la_both}/{n} / {la_data}/{n}",
                    f"{la_speed:.1f}x",
                    " / ".join(
                        str(sum(_search_kind(r["default_search"]) == k for r in results))
                        for k in ("greedy", "greedy, less data", "lookahead", "pairs", "frugal")
                    ),
                    per_set["full"],
                    per_set["quick"],
                    f"{sum(r['hbal_moves'] for r in results)} moves, "
                    f"{sum(r['hbal_data_mib'] for r in results) / 1024:.0f} GiB",
                ]
            )
            rows.append({"shape": label, "results": results})
    return {"table": table, "shapes": rows}


def _against_hbal(results: list[dict[str, Any]], which: str) -> str:
    """How often a set's plan (`which`: "full" or "quick") ends no higher than
    hbal's, in no more moves, both, and copying no more data; its moves and data
    over the shape; and the median of hbal's time over its."""
    n = len(results)
    score_ok = [r[f"{which}_score"] <= r["hbal_score"] + TIE for r in results]
    moves_ok = [r[f"{which}_moves"] <= r["hbal_moves"] for r in results]
    both = sum(a and b for a, b in zip(score_ok, moves_ok, strict=True))
    data_ok = sum(r[f"{which}_data_mib"] <= r["hbal_data_mib"] for r in results)
    moves = sum(r[f"{which}_moves"] for r in results)
    data = sum(r[f"{which}_data_mib"] for r in results) / 1024
    speed = statistics.median(r["hbal_seconds"] / r[f"{which}_seconds"] for r in results)
    return (
        f"{sum(score_ok)}/{n} / {sum(moves_ok)}/{n} / {both}/{n} / {data_ok}/{n} "
        f"({moves} moves, {data:.0f} GiB; {speed:.1f}x)"
    )


if __name__ == "__main__":
    from bench.__main__ import _print_table

    _print_table(run()["table"])


def _search_kind(name: str) -> str:
    """The search a kept plan's name comes from ("pairs 3, cut at ..." -> "pairs")."""
    if name.startswith("greedy, less data"):
        return "greedy, less data"
    return name.split(",")[0].split(" ")[0]
