"""The real node helper's environment (`nodehelper.env.RealEnv`) with production
paths mapped to a test's own files, as the real tests run the node helper:
`MappedEnv` maps every path it is given (argv, a script's environment values, its
working directory and log, file paths, glob patterns and back), and `NetnsEnv` also
runs every command inside a network namespace and maps QMP's arguments. Holds no
tests; root is the caller's concern.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodehelper.env import Outcome, QmpCommand, RealEnv
from tests.support.tools import require_tool


@dataclass(kw_only=True)
class MappedEnv:
    """RealEnv with each production path in `paths` replaced by the test's."""

    paths: dict[str, str]
    real: RealEnv = field(default_factory=RealEnv)

    def _map(self, text: str) -> str:
        for prod, local in self.paths.items():
            text = text.replace(prod, local)
        return text

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return [self._map(a) for a in argv]

    def run(self, argv: Sequence[str], *, stdin: bytes = b"") -> Outcome:
        return self.real.run(self._argv(argv), stdin=stdin)

    def run_script(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        log: str,
        timeout_s: float,
    ) -> Outcome:
        return self.real.run_script(
            self._argv(argv),
            env={k: self._map(v) for k, v in env.items()},
            cwd=self._map(cwd),
            log=self._map(log),
            timeout_s=timeout_s,
        )

    def read_file(self, path: str) -> bytes | None:
        return self.real.read_file(self._map(path))

    def write_file(self, path: str, data: bytes) -> None:
        self.real.write_file(self._map(path), data)

    def write_private(self, path: str, data: bytes) -> None:
        self.real.write_private(self._map(path), data)

    def remove_file(self, path: str) -> bool:
        return self.real.remove_file(self._map(path))

    def glob(self, pattern: str) -> list[str]:
        """The matches, named by their production paths again."""
        back = {local: prod for prod, local in self.paths.items()}
        out = []
        for found in self.real.glob(self._map(pattern)):
            for local, prod in back.items():
                found = found.replace(local, prod)
            out.append(found)
        return out

    def make_run_dir(self, path: str) -> None:
        os.makedirs(self._map(path), exist_ok=True)

    def share_socket(self, path: str) -> None:
        return None

    def term_lock(self, *, exclusive: bool) -> Any:
        return self.real.term_lock(exclusive=exclusive)

    def qmp(self, path: str, commands: Sequence[QmpCommand]) -> list[dict[str, object]]:
        return self.real.qmp(self._map(path), commands)


@dataclass(kw_only=True)
class NetnsEnv(MappedEnv):
    """MappedEnv whose commands run inside network namespace `ns`, qemu found
    wherever Debian put it, and QMP's arguments mapped too (a raw file stands for
    /dev/drbdN)."""

    ns: str

    def _argv(self, argv: Sequence[str]) -> list[str]:
        mapped = super()._argv(argv)
        if mapped[0] == "qemu-system-x86_64":
            mapped[0] = require_tool("qemu-system-x86_64", "qemu-system-x86")
        return ["ip", "netns", "exec", self.ns, *mapped]

    def qmp(self, path: str, commands: Sequence[QmpCommand]) -> list[dict[str, object]]:
        def local(args: Mapping[str, object]) -> dict[str, object]:
            out = {k: (local(v) if isinstance(v, dict) else v) for k, v in args.items()}
            if out.get("driver") == "host_device":  # a raw file stands for /dev/drbdN
                out["driver"] = "file"
            if isinstance(out.get("filename"), str):
                out["filename"] = self._map(str(out["filename"]))
            return out

        return self.real.qmp(self._map(path), [(c, local(a)) for c, a in commands])
