"""The event archive: where sealed segments of old events (and copies of
checkpoints) go before their keys leave etcd, so the log outlives etcd's quota.
Holds the archive's location (`file:///dir` or `s3://bucket/prefix`, never a
credential), its two stores (a directory; an S3-compatible bucket through boto3),
the segment format (gzip'd JSON lines carrying each event's and each seal's stored
bytes verbatim, so digests and signatures check as they did in etcd) and the index
entry etcd keeps for each archived object.

Must not decide what to archive or delete anything from etcd; imports nothing from
the store (the store reads through what this module decodes).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

FORMAT = 1
SEGMENT_KIND = "corral-archive-segment"


class ArchiveError(Exception):
    """The archive cannot be reached, or holds something it should not; one line
    naming the object and what to do."""


class CorruptArchive(ArchiveError):
    """An archived object whose bytes do not decode, or do not match its index."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveLocation:
    url: str
    scheme: str  # "file" or "s3"
    path: str  # directory (file) or key prefix without a trailing slash (s3)
    bucket: str = ""
    endpoint: str = ""  # S3 endpoint URL; "" for the SDK's default
    region: str = "us-east-1"


def parse_location(url: str) -> ArchiveLocation:
    """`file:///var/lib/corral/archive` or `s3://bucket/prefix[?endpoint=URL&region=R]`.
    Credentials never go in the URL (it is stored in etcd): S3 takes them from the
    SDK's usual sources (AWS_ACCESS_KEY_ID..., ~/.aws, an instance role)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ArchiveError(f"archive {url!r}: put no credentials in the URL (it is stored in etcd)")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ArchiveError(f"archive {url!r}: a file archive is file:///ABSOLUTE/DIR")
        if parts.query:
            raise ArchiveError(f"archive {url!r}: a file archive takes no options")
        return ArchiveLocation(url=url, scheme="file", path=parts.path.rstrip("/") or "/")
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ArchiveError(f"archive {url!r}: an S3 archive is s3://BUCKET/PREFIX")
        query = parse_qs(parts.query)
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ArchiveError(f"archive {url!r}: unknown option {sorted(unknown)[0]!r}")
        endpoint = query.get("endpoint", [""])[0]
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ArchiveError(f"archive {url!r}: endpoint must be an http(s) URL")
        return ArchiveLocation(
            url=url,
            scheme="s3",
            bucket=parts.netloc,
            path=parts.path.strip("/"),
            endpoint=endpoint,
            region=query.get("region", ["us-east-1"])[0],
        )
    raise ArchiveError(f"archive {url!r}: use file:///DIR or s3://BUCKET/PREFIX")


class ArchiveStore(Protocol):
    location: ArchiveLocation

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes: ...


def _check_object_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or len(name) > 200:
        raise ArchiveError(f"{name!r} is not an archive object name")
    return name


@dataclass
class FileArchive:
    """A directory, written with a temporary file, fsync and rename (a reader never
    sees half an object)."""

    location: ArchiveLocation

    @property
    def root(self) -> Path:
        return Path(self.location.path)

    async def put(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, _check_object_name(name), data)

    def _put(self, name: str, data: bytes) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / name)
        except OSError as exc:
            raise ArchiveError(f"archive {self.location.url}: cannot write {name}: {exc}") from exc

    async def get(self, name: str) -> bytes:
        path = self.root / _check_object_name(name)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise ArchiveError(
                f"archive {self.location.url}: cannot read {name}: {exc.strerror or exc} "
                "(set $CORRAL_ARCHIVE if the archive is mounted elsewhere on this host)"
            ) from exc


@dataclass
class S3Archive:
    """An S3-compatible bucket (AWS, MinIO, Ceph RGW...) through boto3, run in a
    thread: archiving is rare and bulky, not worth an async SDK."""

    location: ArchiveLocation
    _client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as exc:
                raise ArchiveError(
                    "an s3:// archive needs boto3: pip install 'corral[s3]'"
                ) from exc
            self._client = boto3.client(
                "s3",
                endpoint_url=self.location.endpoint or None,
                region_name=self.location.region,
            )
        return self._client

    def _key(self, name: str) -> str:
        name = _check_object_name(name)
        return f"{self.location.path}/{name}" if self.location.path else name

    async def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        try:
            await asyncio.to_thread(
                self._s3().put_object, Bucket=self.location.bucket, Key=key, Body=data
            )
        except ArchiveError:
            raise
        except Exception as exc:  # botocore's errors, connection errors
            raise ArchiveError(f"archive {self.location.url}: cannot write {name}: {exc}") from exc

    async def get(self, name: str) -> bytes:
        key = self._key(name)

        def fetch() -> bytes:
            got = self._s3().get_object(Bucket=self.location.bucket, Key=key)
            return bytes(got["Body"].read())

        try:
            return await asyncio.to_thread(fetch)
        except ArchiveError:
            raise
        except Exception as exc:
            raise ArchiveError(f"archive {self.location.url}: cannot read {name}: {exc}") from exc


def open_archive(url: str) -> ArchiveStore:
    location = parse_location(url)
    if location.scheme == "file":
        return FileArchive(location=location)
    return S3Archive(location=location)


# --------------------------------------------------------------------- segments


@dataclass(frozen=True, slots=True, kw_only=True)
class RawRecord:
    """One key as etcd stored it: its create revision, key and value bytes."""

    revision: int
    key: str
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    cluster: str
    seq: int
    first_revision: int
    last_revision: int
    seals: tuple[RawRecord, ...]  # the seal keys covering exactly these events
    events: tuple[RawRecord, ...]  # in log order


def _record_line(tag: str, record: RawRecord) -> bytes:
    doc: dict[str, Any] = {tag: record.key, "r": record.revision}
    try:
        doc["v"] = record.value.decode("utf-8")
    except UnicodeDecodeError:
        doc["b"] = base64.b64encode(record.value).decode()
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def encode_segment(segment: Segment) -> bytes:
    header = {
        "kind": SEGMENT_KIND,
        "format": FORMAT,
        "cluster": segment.cluster,
        "seq": segment.seq,
        "first_revision": segment.first_revision,
        "last_revision": segment.last_revision,
        "seals": len(segment.seals),
        "events": len(segment.events),
    }
    lines = [json.dumps(header, separators=(",", ":")).encode() + b"\n"]
    lines += [_record_line("seal", r) for r in segment.seals]
    lines += [_record_line("event", r) for r in segment.events]
    return gzip.compress(b"".join(lines), compresslevel=6, mtime=0)


def _lines(raw: bytes, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = gzip.decompress(raw)
    except (OSError, EOFError, ValueError) as exc:
        raise CorruptArchive(f"{name}: not a gzip stream: {exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise CorruptArchive(f"{name} line {number}: not JSON") from exc
        if not isinstance(doc, dict):
            raise CorruptArchive(f"{name} line {number}: not a JSON object")
        yield number, doc


def _record(doc: dict[str, Any], tag: str, name: str, number: int) -> RawRecord:
    key, revision = doc.get(tag), doc.get("r")
    if not isinstance(key, str) or not isinstance(revision, int) or isinstance(revision, bool):
        raise CorruptArchive(f"{name} line {number}: a {tag} record needs a key and a revision")
    if isinstance(doc.get("v"), str):
        value = str(doc["v"]).encode("utf-8")
    elif isinstance(doc.get("b"), str):
        try:
            value = base64.b64decode(str(doc["b"]), validate=True)
        except ValueError as exc:
            raise CorruptArchive(f"{name} line {number}: bad base64 value") from exc
    else:
        raise CorruptArchive(f"{name} line {number}: a {tag} record without a value")
    return RawRecord(revision=revision, key=key, value=value)


def decode_segment(raw: bytes, *, name: str) -> Segment:
    lines = _lines(raw, name)
    try:
        _, header = next(lines)
    except StopIteration:
        raise CorruptArchive(f"{name}: empty segment") from None
    if header.get("kind") != SEGMENT_KIND or header.get("format") != FORMAT:
        raise CorruptArchive(f"{name}: not a format-{FORMAT} corral archive segment")
    seals, events = [], []
    for number, doc in lines:
        if "seal" in doc:
            seals.append(_record(doc, "seal", name, number))
        elif "event" in doc:
            events.append(_record(doc, "event", name, number))
        else:
            raise CorruptArchive(f"{name} line {number}: neither a seal nor an event")
    try:
        return Segment(
            cluster=str(header["cluster"]),
            seq=int(header["seq"]),
            first_revision=int(header["first_revision"]),
            last_revision=int(header["last_revision"]),
            seals=tuple(seals),
            events=tuple(events),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptArchive(f"{name}: bad header: {exc}") from exc


def segment_name(segment: Segment, data: bytes) -> str:
    """Content-addressed: two archivers racing on one sequence number never
    overwrite each other's object (the index names the one that won)."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return (
        f"segment-{segment.seq:08d}-r{segment.first_revision}-r{segment.last_revision}"
        f"-{digest}.jsonl.gz"
    )


def checkpoint_object_name(revision: int, data: bytes) -> str:
    return f"checkpoint-r{revision:012d}-{hashlib.sha256(data).hexdigest()[:16]}.bin"


# --------------------------------------------------------------------- index


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexEntry:
    """What etcd keeps about one archived object (`archive/segments/<seq>` or
    `archive/checkpoints/<revision>`): enough to find it, check it and know its
    revisions without fetching it."""

    kind: str  # "segment" or "checkpoint"
    seq: int  # segment number; 0 for checkpoints
    name: str
    location: str  # the archive URL it was written to
    sha256: str
    size: int
    first_revision: int
    last_revision: int
    events: int = 0
    # The last archived seal as stored: the chain continues from it in etcd.
    last_seal_key: str = ""
    last_seal: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {f: getattr(self, f) for f in self.__dataclass_fields__}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, key: str) -> IndexEntry:
        try:
            doc = json.loads(raw)
            return cls(**{f: doc[f] for f in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptArchive(f"archive index {key} does not decode: {exc}") from exc


def check_object(entry: IndexEntry, data: bytes) -> None:
    """The fetched object is the one the index recorded."""
    if hashlib.sha256(data).hexdigest() != entry.sha256 or len(data) != entry.size:
        raise CorruptArchive(
            f"archived {entry.kind} {entry.name} at {entry.location} does not match its "
            f"index (sha256 or size differ): it was changed or replaced after archiving"
        )
