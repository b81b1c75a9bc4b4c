"""Shared fixtures: a private etcd per test (own data dir, free loopback ports),
serving TLS with client-certificate authentication and corral's etcd roles, as a
production etcd should."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local_etcd import LocalEtcd
from orchestrator.logs import configure_logging


def pytest_configure(config: pytest.Config) -> None:
    """Log as `corral serve` does on a terminal (plain tracebacks): structlog's
    unconfigured default renders every frame's locals, which takes seconds on a
    cluster state and stalls the loop under test."""
    del config
    configure_logging(json=False)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    server = LocalEtcd(data_dir=tmp_path / "etcd", tls=True).start()
    try:
        yield server
    finally:
        server.stop()


KINDS = ("unit", "etcd", "lab", "real", "parity", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its kind, from the folder it lives in, so that
    `pytest -m unit` (or etcd, lab, real, parity) runs one kind alone."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in KINDS:
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))
