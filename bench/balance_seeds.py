"""corral's balancer against hbal over many generated clusters, not a chosen few:
for each cluster shape, several seeds; for each, corral's greedy search alone
(`--lookahead 0`) and hbal on the same htools file, and how often corral's
final score, move count and data copied are no worse than hbal's; the same for
corral's default (`--lookahead 3`: score and moves, and which of its plans it
kept). The figures
of `bench.balance` are four clusters; this is the spread around them.

Each cluster: `tests.test_balance.generated_cluster` (two node sizes, `svc:*`
exclusion tags, uneven N+1-safe placement, empty nodes added; drained rows have
one drained node). hbal runs as `hbal -t FILE -S OUT`; both final placements are
scored by `reactors.cluster_score` on the start cluster.

Not imported by corral; run by `make bench` or `python -m bench balance_seeds`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.balance import data_moved
from orchestrator.balance_cores import plan_on_cores
from reactors.balance_plan import plan_balance
from reactors.cluster_score import score
from reactors.htools_text import render
from tests.test_balance import generated_cluster, run_hbal, with_placement

# (label, full nodes, empty nodes, instances, drained, seeds)
SHAPES: tuple[tuple[str, int, int, int, bool, range], ...] = (
    ("8 nodes (7+1), 70 instances", 7, 1, 70, False, range(101, 111)),
    ("8 nodes (6+2), 60 instances, drained", 6, 2, 60, True, range(101, 111)),
    ("16 nodes (13+3), 200 instances", 13, 3, 200, False, range(101, 106)),
    ("16 nodes (12+4), 180 instances, drained", 12, 4, 180, True, range(101, 106)),
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
            "default (lookahead 3): score / moves / both / data <= hbal",
            "hbal time / default (median)",
            "default kept: greedy / lookahead / pairs / frugal plan",
        ]
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, full, empty, count, drained, seeds in SHAPES:
            results = []
            for seed in seeds:
                start = generated_cluster(
                    seed=seed, full=full, empty=empty, instances=count, drained=drained
                )
                path = Path(tmp) / f"c{seed}.data"
                path.write_text(render(start))
                t0 = time.perf_counter()
                plan = plan_balance(cluster=start, lookahead=0)
                ours_s = time.perf_counter() - t0
                # as `corral balance` runs it (`plan_on_cores`: on 16 nodes the
                # lookahead search runs in a worker process, on 8 not)
                t0 = time.perf_counter()
                cores = plan_on_cores(cluster=start)
                ahead_s = time.perf_counter() - t0
                ahead = cores.plan
                hbal = run_hbal(path=path)
                assert hbal.balanced is not None
                theirs = with_placement(start, hbal.balanced)
                results.append(
                    {
                        "seed": seed,
                        "greedy_score": plan.score_after,
                        "hbal_score": score(theirs).total,
                        # as hbal counts them (a relocation is two)
                        "greedy_moves": plan.moves_as_hbal,
                        "hbal_moves": hbal.moves,
                        "greedy_data_mib": plan.data_mib,
                        "hbal_data_mib": data_moved(start, theirs),
                        "greedy_seconds": round(ours_s, 3),
                        "hbal_seconds": round(hbal.seconds, 3),
                        "default_score": ahead.score_after,
                        "default_moves": ahead.moves_as_hbal,
                        "default_data_mib": ahead.data_mib,
                        "default_search": ahead.search,
                        "default_seconds": round(ahead_s, 3),
                        "default_searches_in_workers": cores.in_workers,
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
                    f"{sum(la_score)}/{n} / {sum(la_moves)}/{n} / {la_both}/{n} / {la_data}/{n}",
                    f"{la_speed:.1f}x",
                    " / ".join(
                        str(sum(r["default_search"].startswith(k) for r in results))
                        for k in ("greedy", "lookahead", "pairs", "frugal")
                    ),
                ]
            )
            rows.append({"shape": label, "results": results})
    return {"table": table, "shapes": rows}


if __name__ == "__main__":
    from bench.__main__ import _print_table

    _print_table(run()["table"])
