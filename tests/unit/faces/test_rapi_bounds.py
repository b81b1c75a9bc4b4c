"""Work an anonymous or low-privilege RAPI client can cause is bounded: query jobs
are capped and purged from the oldest end; failed logins are counted per client
address in a bounded table (the user name sent is the attacker's to vary), and an
address that fails too often is refused before any password is checked."""

from __future__ import annotations

import base64
import time
from typing import Any, cast

import pytest
from argon2 import PasswordHasher

from orchestrator.rapi import users as rapi_users
from orchestrator.rapi.job_index import MAX_QUERY_JOBS, QUERY_JOB_TTL_S, JobIndex
from orchestrator.rapi.users import FAIL_LIMIT, MAX_PEERS, THROTTLED, RapiUsers


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_query_jobs_are_capped_and_cheap_to_purge() -> None:
    now = [1000.0]
    jobs = JobIndex(store=cast(Any, None), clock=lambda: now[0])
    started = time.perf_counter()
    for i in range(20 * MAX_QUERY_JOBS):
        jobs.add_query(kind="instance.info", target=f"vm{i}", actor="rapi:anonymous", result={})
    took = time.perf_counter() - started
    assert len(jobs._queries) <= MAX_QUERY_JOBS
    # 20,000 queries: the old O(n) scan per call kept 20,000 jobs and did ~2e8
    # comparisons; a purge from the oldest end is a few per call.
    assert took < 5.0
    now[0] += QUERY_JOB_TTL_S + 1
    jobs.add_query(kind="instance.info", target="late", actor="rapi:anonymous", result={})
    assert len(jobs._queries) == 1


def test_login_failures_are_kept_per_address_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    cheap = hasher.hash("dummy")  # the unknown-user check, at test-sized cost
    monkeypatch.setattr(rapi_users, "_dummy", lambda: cheap)
    now = [0.0]
    users = RapiUsers.from_text(f"ops {{ARGON2}}{hasher.hash('opspw')} write")
    users = RapiUsers(users._users, clock=lambda: now[0])
    # 3,000 bad logins under 3,000 user names from one address: one entry, and the
    # address is refused after FAIL_LIMIT, before any hash is computed.
    for i in range(3000):
        users.authenticate(basic(f"user{i}", "x"), peer="198.51.100.7")
    assert len(users.failed) == 1
    assert users.stats.by_reason["unknown-user"] == FAIL_LIMIT
    assert users.stats.by_reason[THROTTLED] == 3000 - FAIL_LIMIT
    assert users.authenticate(basic("ops", "opspw"), peer="198.51.100.7").error == THROTTLED
    # Another address is not punished for it; the window ends.
    assert users.authenticate(basic("ops", "opspw"), peer="203.0.113.9").principal is not None
    now[0] += rapi_users.FAIL_WINDOW_S
    assert users.authenticate(basic("ops", "opspw"), peer="198.51.100.7").principal is not None
    # Many addresses: the table stays bounded.
    for i in range(MAX_PEERS + 500):
        users.authenticate("Bearer x", peer=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(users.failed) == MAX_PEERS


async def test_argon2_checks_leave_the_event_loop_and_are_remembered() -> None:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    users = RapiUsers.from_text(f"ops {{ARGON2}}{hasher.hash('opspw')} write")
    calls = []
    real = rapi_users._verify

    def counting(user: Any, password: str) -> bool:
        calls.append(password)
        return real(user, password)

    rapi_users._verify = counting
    try:
        for _ in range(5):
            got = await users.authenticate_async(basic("ops", "opspw"), peer="p")
            assert got.principal is not None
        assert (await users.authenticate_async(basic("ops", "bad"), peer="p")).error
    finally:
        rapi_users._verify = real
    assert calls == ["opspw", "bad"]
