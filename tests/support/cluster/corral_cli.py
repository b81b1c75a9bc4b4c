"""`corral` run as a user runs it, for tests of the command line: a new process
running the console script's code (`python -m orchestrator.cli.main`, which ends
the way the installed `corral` does), against a test etcd as one of its TLS
identities, in one cluster. Runs the command; decides nothing about its output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from devtools.local_etcd import LocalEtcd


def corral(
    etcd: LocalEtcd, *args: str, identity: str = "alice", cluster: str = "c1"
) -> subprocess.CompletedProcess[str]:
    """`corral ARGS` as `identity`, finished (within a minute)."""
    env = {**os.environ, **etcd.client_env(identity), "CORRAL_CLUSTER": cluster}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def corral_async(
    etcd: LocalEtcd, *args: str, identity: str = "alice", cluster: str = "c1"
) -> subprocess.CompletedProcess[str]:
    """`corral` from a test's event loop, which goes on meanwhile."""
    return await asyncio.to_thread(corral, etcd, *args, identity=identity, cluster=cluster)
