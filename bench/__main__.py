"""`make bench`: run every registered benchmark (or those named on the command line),
print each table and write bench/results/<name>.json."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

# Each module exposes `run() -> dict` with a "table" (list of rows, first row the
# header) plus any figures worth keeping.
BENCHMARKS: list[str] = [
    "event_store",
    "sim_scale",
    "converge",
    "converge_200",
    "heal",
    "handover",
    "heal_scale",
    "log_scale",
    "log_budget",
    "alloc",
    "api",
    "balance",
    "balance_seeds",
    "balance_corpus",
    "alloc_corpus",
    "node_helper",
]

# Where each bench lives, by the name it is run and its results are kept under
# (`python -m bench converge_200`, bench/results/converge_200.json); the last
# one is run by name only, not by default.
MODULES: dict[str, str] = {
    "event_store": "bench.log.event_store",
    "log_scale": "bench.log.log_scale",
    "log_budget": "bench.log.log_budget",
    "sim_scale": "bench.cluster.sim_scale",
    "converge": "bench.cluster.converge",
    "heal": "bench.cluster.heal",
    "handover": "bench.cluster.handover",
    "heal_scale": "bench.cluster.heal_scale",
    "alloc": "bench.htools.alloc",
    "alloc_corpus": "bench.htools.alloc_corpus",
    "balance": "bench.htools.balance",
    "balance_seeds": "bench.htools.balance_seeds",
    "balance_corpus": "bench.htools.balance_corpus",
    "api": "bench.latency.api",
    "node_helper": "bench.latency.node_helper",
    "converge_200": "bench.cluster.converge_200",
    "etcd_tls_choice": "bench.log.etcd_tls_choice",
}


def _print_table(rows: list[list[object]]) -> None:
    if not rows:
        return
    text = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(text[0]))]
    for n, row in enumerate(text):
        cells = [
            c.ljust(w) if (i == 0 or n == 0) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(MODULES.get(name, f"bench.{name}"))
        print(f"\n== {name} ==")
        started = time.time()
        # The machine is shared: the load around a run goes with its figures.
        load_before = [round(x, 2) for x in os.getloadavg()]
        result = module.run()
        result["started_at"] = started
        result["load_avg_1_5_15"] = {
            "before": load_before,
            "after": [round(x, 2) for x in os.getloadavg()],
        }
        _print_table(result.get("table", []))
        after = result["load_avg_1_5_15"]["after"]
        print(f"load average (1, 5, 15 min) before / after: {load_before} / {after}")
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
