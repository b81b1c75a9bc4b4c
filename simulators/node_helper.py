"""The node helper on a simulated host: the same `nodehelper` code a real node runs
from /usr/local/lib/corral/corral-node-helper, executed in process, with its tool
runs answered by `simulators.tools` (as root), its file reads and writes on the
host's files, and its term lock a no-op (one simulated host runs one command at
a time). Command faults armed with kind "fail" also hit the tool runs inside the
helper, matched against the tool's argv.

No I/O. Imports nothing from corral's product packages; `nodehelper` imports
nothing from corral either.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nodehelper.env import Outcome
from nodehelper.main import run as run_helper_argv
from nodehelper.verbs import VERBS
from simulators.fabric import Fabric, Host
from simulators.hotplug_qmp import answer
from simulators.tools.files import read_host_file
from simulators.tools.osdef import run_os_script
from simulators.tools.registry import Result

HELPER_PATH = "/usr/local/lib/corral/corral-node-helper"
WRITABLE = ("/etc/drbd.d/", "/run/corral/", "/var/lib/corral/")
HELPER_BODY_VERBS = frozenset(v.name for v in VERBS.values() if v.body)

# (fabric, host, argv, stdin) -> Result: the shell's runner for tools as root.
ToolRunner = Callable[[Fabric, Host, list[str], bytes], Result]


@dataclass
class SimNodeEnv:
    fabric: Fabric
    host: Host
    run_tool: ToolRunner

    def run(self, argv: Sequence[str], *, stdin: bytes = b"") -> Outcome:
        fault = self.fabric.fault_for(self.host.name, " ".join(argv))
        if fault is not None and fault.kind == "fail":
            return Outcome(1, b"", f"simulated failure of: {' '.join(argv)}\n".encode())
        result = self.run_tool(self.fabric, self.host, list(argv), stdin)
        return Outcome(result.rc, result.out.encode(), result.err.encode())

    def run_script(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        log: str,
        timeout_s: float,
    ) -> Outcome:
        fault = self.fabric.fault_for(self.host.name, " ".join(argv))
        if fault is not None and fault.kind == "fail":
            return Outcome(1, b"", f"simulated failure of: {' '.join(argv)}\n".encode())
        result = run_os_script(self.fabric, self.host, list(argv), env=env, log=log)
        return Outcome(result.rc, result.out.encode(), result.err.encode())

    def read_file(self, path: str) -> bytes | None:
        return read_host_file(self.fabric, self.host, path)

    def write_file(self, path: str, data: bytes) -> None:
        if not path.startswith(WRITABLE) or ".." in path:
            raise PermissionError(f"simulated host: {path} is outside what the helper writes")
        self.host.files[path] = data

    def write_private(self, path: str, data: bytes) -> None:
        self.write_file(path, data)
        self.host.private.add(path)

    def remove_file(self, path: str) -> bool:
        return self.host.files.pop(path, None) is not None

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.host.files if fnmatch.fnmatchcase(p, pattern))

    def make_run_dir(self, path: str) -> None:
        if path != "/run/corral":
            raise PermissionError(f"simulated host: {path} is not the VM run directory")

    def share_socket(self, path: str) -> None:
        # The socket must be one a VM of this host listens on.
        for vm in self.host.vms.values():
            if any(re.fullmatch(rf"unix:{re.escape(path)}(,.*)?", a) for a in vm.argv):
                return
        raise FileNotFoundError(f"simulated host: no VM listens on {path}")

    def term_lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def qmp(
        self, path: str, commands: Sequence[tuple[str, Mapping[str, object]]]
    ) -> list[dict[str, object]]:
        vm = next((v for v in self.host.vms.values() if v.qmp_path == path), None)
        if vm is None:
            raise FileNotFoundError(f"simulated host: no VM listens on {path}")
        answers: list[dict[str, object]] = []
        for command, arguments in commands:
            answers.append(answer(self.fabric, self.host, vm, command, dict(arguments)))
            if "error" in answers[-1]:
                break
        return answers


def run_helper(
    fabric: Fabric, host: Host, argv: list[str], stdin: bytes, run_tool: ToolRunner
) -> Result:
    """`sudo -n HELPER_PATH argv...` on `host`."""
    done = run_helper_argv(argv, stdin, SimNodeEnv(fabric=fabric, host=host, run_tool=run_tool))
    return Result(
        rc=done.rc,
        out=done.stdout.decode(errors="replace"),
        err=done.stderr.decode(errors="replace"),
    )
