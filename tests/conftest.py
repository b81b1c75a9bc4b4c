"""Shared fixtures: a private etcd per test (own data dir, free loopback ports)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.local_etcd import LocalEtcd


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    server = LocalEtcd(data_dir=tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.stop()


def require_tool(path_or_name: str, package: str) -> str:
    """Skip the calling test, naming the Debian package, when a real tool is missing."""
    found = shutil.which(path_or_name) or (path_or_name if Path(path_or_name).exists() else None)
    if not found:
        for prefix in ("/usr/sbin/", "/sbin/"):
            if Path(prefix + path_or_name).exists():
                return prefix + path_or_name
        pytest.skip(f"{path_or_name} not installed (Debian package {package})")
    return found
