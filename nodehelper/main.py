"""The helper's entry point: `corral-node-helper VERB [--term N] [OPTION...] ARG...`
(run as root through `sudo -n`). Parses a command line strictly (known verbs and
options only, exact argument counts, `--term` required exactly on mutating
verbs), validates everything before acting, runs the verb under the term, and
turns every refusal into one line on stderr and a distinct exit status:
64 refused, 75 stale term, 69 term lock busy, 70 the node failed us.

`batch --term N` reads JSON lines, one request each ({"argv": [VERB, ARG...],
"stdin": TEXT, "group": NAME, "ok_if_stderr": REGEX}, all but argv optional),
validates them all, then runs them in order under the one term and answers one
JSON line each ({"rc", "stdout", "stderr"}; {"rc": null, "skipped": true, ...}
for the rest of a group after its first failure).

Standard library only; `run` takes the environment, `cli` is the real node's.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nodehelper.env import LockBusy, NodeEnv, Outcome, RealEnv
from nodehelper.fields import (
    EXIT_REFUSED,
    Refused,
    check_object,
    check_term,
    check_text,
)
from nodehelper.terms import (
    EXIT_LOCK_BUSY,
    EXIT_STALE_TERM,
    StaleTerm,
    TermFileBroken,
    term_held,
)
from nodehelper.verbs import VERBS, Act

EXIT_NODE_FAILED = 70  # EX_SOFTWARE: an OS error on the node
BODY_LIMIT = 64 * 1024
BATCH_LIMIT = 8 * 1024 * 1024
BATCH_REQUESTS_MAX = 1000
_BATCH_KEYS = frozenset({"stdin", "group", "ok_if_stderr"})


@dataclass(frozen=True, slots=True)
class Request:
    verb: str
    mutating: bool
    act: Act
    term: int | None = None


def parse_request(argv: Sequence[str], stdin: bytes, *, in_batch: bool = False) -> Request:
    """A command line, validated whole; Refused names what is wrong."""
    if not argv:
        raise Refused(f"no verb given; verbs: {', '.join(VERBS)}")
    verb = VERBS.get(argv[0])
    if verb is None:
        raise Refused(f"unknown verb {argv[0]!r}; verbs: {', '.join(VERBS)}")
    if in_batch and verb.name == "batch":
        raise Refused("a batch cannot hold a batch")
    term: int | None = None
    options: list[str] = []
    args: list[str] = []
    rest = list(argv[1:])
    while rest:
        token = rest.pop(0)
        if token == "--term" and verb.mutating and not in_batch and term is None:
            if not rest:
                raise Refused("--term needs a value")
            term = check_term(rest.pop(0))
        elif token.startswith("-"):
            if token not in verb.options:
                raise Refused(f"{verb.name}: option {token!r} is not allowed")
            options.append(token)
        else:
            args.append(token)
    if verb.mutating and not in_batch and term is None:
        raise Refused(f"{verb.name} changes the node: it needs --term N")
    if len(args) != len(verb.arguments):
        usage = " ".join(verb.arguments) or "no arguments"
        raise Refused(f"{verb.name} takes {usage}; got {len(args)} argument(s)")
    if verb.body and len(stdin) > BODY_LIMIT and verb.name != "batch":
        raise Refused(f"{verb.name}: request larger than {BODY_LIMIT} bytes")
    act = verb.build(args, options, stdin)
    return Request(verb=verb.name, mutating=verb.mutating, act=act, term=term)


def run(argv: Sequence[str], stdin: bytes, env: NodeEnv) -> Outcome:
    """One helper invocation: its exit status, stdout and stderr."""
    verb = argv[0] if argv and argv[0] in VERBS else "corral-node-helper"
    try:
        request = parse_request(argv, stdin)
        if request.verb == "batch":
            assert request.term is not None
            return run_batch(request.term, stdin, env)
        if request.term is None:
            return request.act(env)
        with term_held(env, request.term):
            return request.act(env)
    except Refused as exc:
        return _refusal(EXIT_REFUSED, verb, str(exc))
    except StaleTerm as exc:
        return _refusal(EXIT_STALE_TERM, verb, str(exc))
    except LockBusy as exc:
        return _refusal(EXIT_LOCK_BUSY, verb, str(exc))
    except (TermFileBroken, OSError) as exc:
        return _refusal(EXIT_NODE_FAILED, verb, f"{type(exc).__name__}: {exc}")


def _refusal(rc: int, verb: str, message: str) -> Outcome:
    line = " ".join(message.split())  # one line, whatever the message held
    return Outcome(rc, b"", f"corral-node-helper: {verb}: {line}\n".encode())


@dataclass(frozen=True, slots=True)
class _BatchItem:
    request: Request
    group: str | None
    ok_if_stderr: re.Pattern[str] | None


def parse_batch(stdin: bytes) -> list[_BatchItem]:
    if len(stdin) > BATCH_LIMIT:
        raise Refused(f"requests larger than {BATCH_LIMIT} bytes")
    lines = [line for line in stdin.split(b"\n") if line.strip()]
    if not 1 <= len(lines) <= BATCH_REQUESTS_MAX:
        raise Refused(f"a batch holds 1..{BATCH_REQUESTS_MAX} requests, got {len(lines)}")
    items = []
    for n, line in enumerate(lines, 1):
        try:
            items.append(_batch_item(line))
        except Refused as exc:
            raise Refused(f"request {n}: {exc}") from None
    return items


def _batch_item(line: bytes) -> _BatchItem:
    try:
        doc: Any = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"not JSON: {exc}") from None
    doc = check_object(doc, what="request", required=frozenset({"argv"}), optional=_BATCH_KEYS)
    argv = doc["argv"]
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise Refused("argv must be a list of strings")
    body = check_text(doc.get("stdin", ""), what="stdin", limit=BODY_LIMIT).encode()
    group = doc.get("group")
    if group is not None:
        check_text(group, what="group", limit=200)
    pattern = None
    if "ok_if_stderr" in doc:
        try:
            pattern = re.compile(check_text(doc["ok_if_stderr"], what="ok_if_stderr", limit=200))
        except re.error as exc:
            raise Refused(f"ok_if_stderr is not a regular expression: {exc}") from None
    request = parse_request(argv, body, in_batch=True)
    return _BatchItem(request=request, group=group, ok_if_stderr=pattern)


def run_batch(term: int, stdin: bytes, env: NodeEnv) -> Outcome:
    items = parse_batch(stdin)
    failed: set[str] = set()
    results: list[dict[str, object]] = []
    with term_held(env, term):
        for item in items:
            if item.group is not None and item.group in failed:
                results.append(
                    {
                        "rc": None,
                        "skipped": True,
                        "stdout": "",
                        "stderr": f"skipped: an earlier request of group {item.group} failed\n",
                    }
                )
                continue
            done = _run_item(item, env)
            err = done.stderr.decode(errors="replace")
            tolerated = item.ok_if_stderr is not None and item.ok_if_stderr.search(err)
            if done.rc != 0 and not tolerated and item.group is not None:
                failed.add(item.group)
            results.append(
                {"rc": done.rc, "stdout": done.stdout.decode(errors="replace"), "stderr": err}
            )
    out = "".join(json.dumps(r, sort_keys=True) + "\n" for r in results)
    return Outcome(0, out.encode())


def _run_item(item: _BatchItem, env: NodeEnv) -> Outcome:
    try:
        return item.request.act(env)
    except Refused as exc:  # a check only the node can make (a bridge, a seed image)
        return _refusal(EXIT_REFUSED, item.request.verb, str(exc))
    except OSError as exc:
        return _refusal(EXIT_NODE_FAILED, item.request.verb, f"{type(exc).__name__}: {exc}")


def cli() -> int:
    os.umask(0o022)
    argv = sys.argv[1:]
    verb = VERBS.get(argv[0]) if argv else None
    limit = BATCH_LIMIT if verb is not None and verb.name == "batch" else BODY_LIMIT
    stdin = sys.stdin.buffer.read(limit + 1) if verb is not None and verb.body else b""
    done = run(argv, stdin, RealEnv.from_sudo())
    sys.stdout.buffer.write(done.stdout)
    sys.stderr.buffer.write(done.stderr)
    sys.stdout.flush()
    return done.rc


if __name__ == "__main__":
    sys.exit(cli())
