"""A child process run to its end, timed two ways: wall time, and the CPU time
(user + system) it and every process it waited for used. On this shared
machine other work slows a process's wall time but hardly its CPU time, so the
ratio of two tools' CPU times is the one that does not depend on the load of
the moment; the load average at the start of the run is kept beside it.

Must not decide anything about what it runs; it only runs and times.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Timed:
    """What a child printed and what it took."""

    stdout: str
    wall_s: float
    cpu_s: float
    load: float  # the 1-minute load average when it started


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run_timed(argv: Sequence[str], *, timeout: float) -> Timed:
    """Run `argv` to its end (an error if it fails), one child at a time: the
    CPU figure is the growth of this process's waited-for children's total."""
    load = os.getloadavg()[0]
    cpu0 = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return Timed(stdout=done.stdout, wall_s=wall, cpu_s=cpu, load=load)
