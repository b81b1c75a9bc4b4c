"""Deeply nested flow collections are refused before ruamel sees them (it takes
seconds, quadratic in the depth), at the line and column where the text went too
deep; brackets in quotes and comments do not count, and the limit leaves every
real file alone."""

from __future__ import annotations

import time

import pytest

from orchestrator.desired.file import DesiredFileError, parse_desired
from orchestrator.desired.nesting import MAX_FLOW_DEPTH, too_deep


def _problems(text: str) -> list[str]:
    try:
        parse_desired([("deep.yaml", text)])
    except DesiredFileError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_ten_kilobytes_of_brackets_are_refused_at_once_where_they_go_too_deep() -> None:
    text = "cluster: {name: x}\ninstances: " + "[" * 5000 + "]" * 5000 + "\n"
    started = time.perf_counter()
    problems = _problems(text)
    took = time.perf_counter() - started
    column = len("instances: ") + MAX_FLOW_DEPTH + 1
    assert problems == [
        f"deep.yaml:2:{column}: yaml: the YAML is nested too deeply "
        f"(more than {MAX_FLOW_DEPTH} levels of [ ] or {{ }})"
    ]
    assert took < 1.0, took  # ruamel alone: 7 s or more


def test_the_limit_itself_goes_to_the_yaml_parser() -> None:
    text = "a: " + "[" * MAX_FLOW_DEPTH + "]" * MAX_FLOW_DEPTH + "\n"
    assert too_deep(text) is None
    # parsed as YAML: the complaint is about the key, not the nesting
    assert _problems(text) == [
        "deep.yaml:1:1: a: unknown key 'a' in the file; allowed: cluster, groups, "
        "nodes, instances, images"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "x: '" + "[" * 200 + "'\n",
        'x: "\\"' + "{" * 200 + '"\n',
        "x: 1  # " + "[" * 200 + "\n",
        "# " + "{" * 200 + "\n",
        "x: 'it''s " + "[" * 200 + "'\n",
    ],
    ids=["single-quoted", "double-quoted-with-escape", "comment", "comment-line", "quote-in-quote"],
)
def test_brackets_in_quotes_and_comments_do_not_count(text: str) -> None:
    assert too_deep(text) is None


def test_a_hash_inside_a_plain_scalar_is_no_comment() -> None:
    # `a#b` is a plain scalar: the brackets after it are real flow collections
    text = "x: a#b " + "[" * (MAX_FLOW_DEPTH + 1) + "\n"
    found = too_deep(text)
    assert found is not None and found.line == 1
