"""What the event store raises and reports: etcd unreachable or not confirming a
write, a stale writer, a leader whose term ended, an archived segment that cannot
be read, a corrupt record; and the small tests of gRPC failures both its write
side (events.store) and its read side (events.etcdlog.log_reads) make. Must not talk to
etcd.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aetcd.exceptions as etcd_errors

if TYPE_CHECKING:
    from events.archive import IndexEntry


# What a request may fail with that another attempt (or member) may not.
RETRYABLE = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalError,
)


class EtcdUnavailable(Exception):
    """etcd did not answer; str() is one line naming the endpoint and what to do."""

    def __init__(self, endpoint: str, detail: str = "", *, tls_refused: bool = False) -> None:
        self.endpoint = endpoint
        if tls_refused:  # it answered: the certificates are the problem
            super().__init__(f"etcd at {endpoint}: {detail}")
            return
        super().__init__(
            f"etcd at {endpoint} is not reachable{': ' + detail if detail else ''} "
            "(start it, or point corral at a running one with --etcd HOST:PORT "
            "or $CORRAL_ETCD; a cluster answers only while a majority of its "
            "members is up)"
        )


class WriteNotConfirmed(EtcdUnavailable):
    """A write etcd did not confirm in time: no quorum (a majority of its members
    down or cut off), or no member reachable. Nothing is acknowledged; the same
    write retried later is stored once (event ids are write-once)."""

    def __init__(self, endpoint: str, detail: str = "") -> None:
        Exception.__init__(
            self,
            f"etcd at {endpoint} did not confirm the write ({detail or 'no answer'}): "
            "it has no quorum or cannot be reached; nothing was acknowledged: retry "
            "once a majority of etcd's members is up (a retry is stored once)",
        )
        self.endpoint = endpoint


class ArchiveUnreadable(Exception):
    """Events the log needs are in an archived segment that cannot be read."""

    def __init__(self, entry: IndexEntry, detail: str) -> None:
        self.entry = entry
        super().__init__(
            f"events at revisions {entry.first_revision}-{entry.last_revision} are archived "
            f"in {entry.name} at {entry.location}: {detail}"
        )


class Compacted(Exception):
    """A read at a revision etcd has compacted away; `resume_at` is the first
    revision the reader still needs."""

    def __init__(self, resume_at: int) -> None:
        self.resume_at = resume_at


class VersionConflict(Exception):
    """A stale writer: the object changed since the version it expected."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key, self.expected, self.actual = key, expected, actual
        super().__init__(f"{key} is at version {actual}, not {expected}: re-read and retry")


class NotLeader(Exception):
    """A guarded append refused: the leader key's create revision is no longer the
    writer's term (a newer leader was elected, or the key expired)."""

    def __init__(self, term: int, current: int) -> None:
        self.term, self.current = term, current
        now = f"term {current} leads now" if current else "no leader holds the key now"
        super().__init__(f"not the leader: this orchestrator's term {term} ended ({now})")


@dataclass(frozen=True, slots=True, kw_only=True)
class CorruptRecord:
    key: str
    revision: int
    why: str


def channel_reset() -> bool:
    """A CancelledError that is not this task being cancelled: gRPC cancels the
    calls of a channel closed under them (the store moving to another member, a
    resubscription). A read of the log cut short so was a CancelledError that
    ended the subscription's pump for good: the fold stopped without an error
    (make chaos seed 0). It is EtcdUnavailable, which readers retry."""
    task = asyncio.current_task()
    return task is not None and not task.cancelling()


def denied(exc: BaseException) -> bool:
    return "permission denied" in str(exc) or "user name not found" in str(exc)


def prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's key range holding every key that starts with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
