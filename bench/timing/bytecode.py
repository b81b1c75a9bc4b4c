"""corral's modules compiled to bytecode before a bench times `corral` as a
process, as an installed corral is: pip compiles every module of a package it
installs, but the editable install `make install` makes does not, and where
PYTHONDONTWRITEBYTECODE is set (as on the shared development machine) Python
never writes the compiled files, so each start compiles every module it
imports again (about 60 ms of CPU for the balancer's modules, measured with
`python -X importtime`), a cost no installed corral pays. Compiled files whose
source changed later are ignored by Python (their recorded source time no
longer matches), so this can never run stale code.

Must not decide anything about what is timed; it only compiles.
"""

from __future__ import annotations

import compileall
from pathlib import Path

_PACKAGES = ("events", "orchestrator", "reactors")


def compile_corral(root: Path | None = None) -> None:
    """Compile corral's own packages (quietly; errors would show when run): these,
    or those of the checkout at `root`."""
    root = root or Path(__file__).resolve().parents[2]
    for name in _PACKAGES:
        compileall.compile_dir(root / name, quiet=2)
