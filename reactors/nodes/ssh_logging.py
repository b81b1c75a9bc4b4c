"""asyncssh's logger made to ask whether a level is enabled before it formats a
message: its `SSHLogger.log` turns every argument into text (and builds two
closures) at each call, and only then hands the message to `logging`, which drops
it below the level set (WARNING unless someone asks for more). asyncssh logs at
INFO each channel it opens and each exit status, so with one exec per node per
probe interval that was 5-7% of the orchestrator's samples while a 100-node
cluster converged.

Must not change what is logged when a level is enabled: the same call goes on to
asyncssh's own method then.
"""

from __future__ import annotations

from typing import Any

from asyncssh.logging import SSHLogger

_ORIGINAL = SSHLogger.log


def _log_if_enabled(self: SSHLogger, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
    if self.isEnabledFor(level):
        _ORIGINAL(self, level, msg, *args, **kwargs)


def check_level_first() -> None:
    """Put the level check in front of asyncssh's `SSHLogger.log` (once)."""
    if SSHLogger.log is not _log_if_enabled:
        SSHLogger.log = _log_if_enabled  # type: ignore[method-assign]
