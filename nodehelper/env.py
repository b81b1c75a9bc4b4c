"""The node as the helper's verbs see it, behind a small protocol: run a tool's argv
with some stdin, run a script with a given environment and its output in a log
file (an OS definition's), read/write/remove a file, make the VM run directory and hand its
sockets to the calling account's group, take the term lock, and speak QMP to a
VM's monitor socket (for hotplug). `RealEnv` is the
real node (subprocess, os, fcntl); the simulator gives its own, so that simulated
and real nodes run the same verbs.

Standard library only. Builds no command lines and checks no arguments: the verbs
give it argv lists and fixed paths they have validated.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# The tools' own locations on Debian; sudo's secure_path is not relied on.
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
TOOL_TIMEOUT_S = 300.0
LOCK_WAIT_S = 20.0
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 2000
QMP_TIMEOUT_S = 10.0  # one command's answer; also how long a guest may take to release a device
QmpCommand = tuple[str, Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a tool run, or a whole verb, answered."""

    rc: int
    stdout: bytes = b""
    stderr: bytes = b""


class LockBusy(Exception):
    """The term lock was not free within LOCK_WAIT_S (a long command of another
    term is still running on the node)."""


class NodeEnv(Protocol):
    def run(self, argv: Sequence[str], *, stdin: bytes = b"") -> Outcome: ...

    def run_script(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        log: str,
        timeout_s: float,
    ) -> Outcome:
        """Run `argv` with exactly `env`, in `cwd`, no stdin, its stdout and stderr
        appended to the file `log` (root's; its directory made if missing): the
        exit status (124 timed out, 126 not executable, 127 missing) and, as
        stderr, the log's last LOG_TAIL_LINES lines (at most LOG_TAIL_BYTES)."""

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    def write_file(self, path: str, data: bytes) -> None:
        """Replace the file atomically (root-owned, mode 0644)."""

    def write_private(self, path: str, data: bytes) -> None:
        """Replace the file atomically, root's only (0600), in a directory that is
        root's only (0700; made if missing, tightened if not)."""

    def remove_file(self, path: str) -> bool:
        """Whether there was a file to remove."""

    def glob(self, pattern: str) -> list[str]:
        """The existing paths matching a shell pattern, sorted."""

    def make_run_dir(self, path: str) -> None:
        """The VM run directory: root-owned, readable by the caller's group only."""

    def share_socket(self, path: str) -> None:
        """Let the calling account's group connect to a root-owned unix socket."""

    def term_lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        """Hold the term lock (shared or exclusive); LockBusy if it stays taken."""

    def qmp(self, path: str, commands: Sequence[QmpCommand]) -> list[dict[str, object]]:
        """Run QMP commands in one session on the monitor socket at `path`, in order,
        stopping after the first whose answer is an error: their answers. A
        `device_del` answers once the guest has released the device (qemu's
        DEVICE_DELETED event), or with an error after QMP_TIMEOUT_S."""


@dataclass
class RealEnv:
    """The real node. `root` prefixes every file path (tests point it at a
    temporary directory; the installed helper always uses "/")."""

    root: str = "/"
    caller_gid: int | None = None  # the sudo caller's group (SUDO_GID)

    @classmethod
    def from_sudo(cls) -> RealEnv:
        gid = os.environ.get("SUDO_GID", "")
        return cls(caller_gid=int(gid) if gid.isdigit() and int(gid) != 0 else None)

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def run(self, argv: Sequence[str], *, stdin: bytes = b"") -> Outcome:
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                timeout=TOOL_TIMEOUT_S,
                env={"PATH": SAFE_PATH, "LC_ALL": "C"},
                check=False,
            )
        except FileNotFoundError:
            return Outcome(127, b"", f"{argv[0]}: command not found\n".encode())
        except subprocess.TimeoutExpired:
            return Outcome(124, b"", f"{argv[0]}: timed out after {TOOL_TIMEOUT_S:.0f}s\n".encode())
        return Outcome(done.returncode, done.stdout, done.stderr)

    def run_script(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        log: str,
        timeout_s: float,
    ) -> Outcome:
        target = self._path(log)
        os.makedirs(os.path.dirname(target), mode=0o750, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
        try:
            rc = _run_logged(
                [self._path(argv[0]), *argv[1:]], env=env, cwd=self._path(cwd), fd=fd,
                timeout_s=timeout_s,
            )  # fmt: skip
        finally:
            os.close(fd)
        return Outcome(rc, b"", log_tail(target))

    def read_file(self, path: str) -> bytes | None:
        try:
            with open(self._path(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_file(self, path: str, data: bytes) -> None:
        target = self._path(path)
        tmp = f"{target}.corral-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    def write_private(self, path: str, data: bytes) -> None:
        target = self._path(path)
        folder = os.path.dirname(target)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        tmp = f"{target}.corral-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    def remove_file(self, path: str) -> bool:
        try:
            os.unlink(self._path(path))
        except FileNotFoundError:
            return False
        return True

    def glob(self, pattern: str) -> list[str]:
        found = glob.glob(self._path(pattern))
        return sorted("/" + os.path.relpath(p, self.root) for p in found)

    def make_run_dir(self, path: str) -> None:
        target = self._path(path)
        os.makedirs(target, mode=0o750, exist_ok=True)
        os.chown(target, -1, -1 if self.caller_gid is None else self.caller_gid)
        os.chmod(target, 0o750)

    def share_socket(self, path: str) -> None:
        if self.caller_gid is not None:
            target = self._path(path)
            if not stat.S_ISSOCK(os.lstat(target).st_mode):
                raise FileNotFoundError(f"{path} is not a socket")
            os.chown(target, -1, self.caller_gid, follow_symlinks=False)
            os.chmod(target, 0o660)

    def qmp(self, path: str, commands: Sequence[QmpCommand]) -> list[dict[str, object]]:
        return qmp_unix(self._path(path), commands)

    @contextlib.contextmanager
    def term_lock(self, *, exclusive: bool) -> Iterator[None]:
        os.makedirs(self._path("/var/lib/corral"), mode=0o755, exist_ok=True)
        fd = os.open(
            self._path("/var/lib/corral/term.lock"),
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
            0o600,
        )
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockBusy(
                            f"the term lock stayed taken for {LOCK_WAIT_S:.0f}s"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)


def _run_logged(
    argv: list[str], *, env: Mapping[str, str], cwd: str, fd: int, timeout_s: float
) -> int:
    """`argv` in its own session with its output on `fd`; on timeout the whole
    session is killed (a script's children too)."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        os.write(fd, f"{argv[0]}: not found\n".encode())
        return 127
    except PermissionError:
        os.write(fd, f"{argv[0]}: not executable\n".encode())
        return 126
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        os.write(fd, f"{argv[0]}: killed after {timeout_s:.0f}s\n".encode())
        return 124


def log_tail(path: str) -> bytes:
    """The last LOG_TAIL_LINES lines of the file at `path`, at most LOG_TAIL_BYTES."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return b""
    return b"".join(data.splitlines(keepends=True)[-LOG_TAIL_LINES:])[-LOG_TAIL_BYTES:]


def qmp_unix(path: str, commands: Sequence[QmpCommand]) -> list[dict[str, object]]:
    """QMP over a unix socket (the capabilities handshake first); see NodeEnv.qmp."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(QMP_TIMEOUT_S)
        sock.connect(path)
        stream = sock.makefile("rwb")
        deleted: set[str] = set()

        def answer() -> dict[str, object]:
            while True:
                line = stream.readline()
                if not line:
                    return {"error": {"class": "GenericError", "desc": "QMP connection closed"}}
                doc = json.loads(line)
                if doc.get("event") == "DEVICE_DELETED":
                    deleted.add(str((doc.get("data") or {}).get("device", "")))
                elif "event" not in doc:
                    return dict(doc)

        stream.readline()  # the greeting
        answers: list[dict[str, object]] = []
        for command, arguments in [("qmp_capabilities", {}), *commands]:
            stream.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
            stream.flush()
            reply = answer()
            device = str(arguments.get("id", ""))
            if command == "device_del" and "return" in reply:
                deadline = time.monotonic() + QMP_TIMEOUT_S
                while device not in deleted and time.monotonic() < deadline:
                    try:
                        stream.write(b'{"execute": "query-status"}\n')
                        stream.flush()
                        answer()
                    except TimeoutError:
                        break
                    if device not in deleted:
                        time.sleep(0.1)
                if device not in deleted:
                    reply = {
                        "error": {
                            "class": "GenericError",
                            "desc": f"the guest did not release {device} within "
                            f"{QMP_TIMEOUT_S:.0f}s (no ACPI hotplug support?)",
                        }
                    }
            if command != "qmp_capabilities":
                answers.append(reply)
            if "error" in reply:
                break
        return answers
