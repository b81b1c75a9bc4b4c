"""The registry of the commands a simulated host answers (`TOOLS`: argv[0] -> the
function answering it) and what each answer is (`Result`: exit code, stdout,
stderr). Every module of this package registers its commands with `tool`.

No I/O. Imports nothing from corral's own packages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulators.fabric import Fabric, Host


@dataclass
class Result:
    rc: int = 0
    out: str = ""
    err: str = ""


Tool = Callable[[Fabric, Host, list[str], bytes], Result]
TOOLS: dict[str, Tool] = {}


def tool(*names: str) -> Callable[[Tool], Tool]:
    def register(fn: Tool) -> Tool:
        for name in names:
            TOOLS[name] = fn
        return fn

    return register
