"""structlog, configured once at the process edge: a console renderer on a TTY,
JSON lines otherwise, and a processor that masks any key that looks like a secret.
Pure modules never log; everything else gets a logger bound to what it works on.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET = re.compile(r"pass(word)?|secret|token|credential|private", re.I)


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _SECRET.search(key):
            event[key] = "***"
    return event


def configure_logging(*, level: str = "info", json: bool | None = None) -> None:
    as_json = (not sys.stderr.isatty()) if json is None else json
    # Plain tracebacks: the default (rich, with every frame's local variables)
    # can take seconds on a large cluster state, on the reactors' loop, and would
    # print whatever secret a local variable holds.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _mask_secrets,
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
