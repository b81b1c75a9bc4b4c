"""Which etcd releases corral warns about: those known to lose writes the cluster
committed, those older than the production minimums, and versions it cannot read."""

from __future__ import annotations

import pytest

from events.etcd_versions import parse_version, version_problem


@pytest.mark.parametrize("version", ["3.4.22", "3.4.23", "3.5.6", "3.5.17", "3.6.0", "4.0.0"])
def test_releases_without_a_known_loss_pass(version: str) -> None:
    assert version_problem(version) == ""


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("3.5.0", "etcd-io/etcd#13766"),
        ("3.5.1", "etcd-io/etcd#13766"),
        ("3.5.2", "etcd-io/etcd#13766"),
        ("3.5.5", "data-inconsistency"),
        ("3.4.21", "data-inconsistency"),
        ("3.4.3", "older than the releases recommended"),
        ("3.3.27", "no longer maintained"),
        ("", "could not be read"),
        ("unknown", "could not be read"),
    ],
)
def test_releases_with_a_known_problem_say_which_and_what_to_run(version: str, why: str) -> None:
    problem = version_problem(version)
    assert why in problem
    assert "3.4.22" in problem and "3.5.6" in problem


def test_the_version_is_read_from_what_etcd_prints() -> None:
    printed = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n"
    assert parse_version(printed) == (3, 4, 23)
    assert parse_version("Go Version: go1.19") is None
