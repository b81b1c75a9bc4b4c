"""The views the native API serves, checked against the types its OpenAPI document is
generated from (`orchestrator.api.shapes`): a view that gains, loses or retypes a
field fails here before schemathesis sees it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from pydantic import TypeAdapter

from events.ids import EventId, InstanceName, JobId
from events.model import JobKind, JobSubmitted
from events.projection import fold
from orchestrator.api import shapes
from orchestrator.api.openapi import openapi_document
from orchestrator.cluster_report import (
    event_json,
    instance_info,
    instance_row,
    job_json,
    node_info,
    node_rows,
    row_json,
    status_dict,
    verify,
)
from tests.support.states.plan_states import NOW, WEB, A, B, online, res, state


def _check(tp: Any, value: Any) -> None:
    TypeAdapter(tp).validate_python(json.loads(json.dumps(value, default=str)), strict=False)


def test_every_view_has_the_shape_the_document_says() -> None:
    st = state({A: online(A, drbd=(res("Primary", "UpToDate", B),)), B: online(B)})
    submitted = JobSubmitted(
        id=EventId("j1"),
        time=time.time(),
        actor="ops",
        job_id=JobId("0001-abc"),
        kind=JobKind.INSTANCE_STOP,
        targets=(f"instance/{WEB}",),
    )
    st = fold(st, [(st.revision + 1, submitted)])
    _check(shapes.InstanceInfo, instance_info(st, InstanceName(WEB), now=NOW))
    _check(list[shapes.InstanceRow], [row_json(asdict(instance_row(st, WEB, now=NOW)))])
    _check(shapes.NodeInfo, node_info(st, A))
    _check(list[shapes.NodeRow], [row_json(asdict(r)) for r in node_rows(st)])
    _check(shapes.Status, status_dict(st, now=NOW))
    _check(shapes.JobInfo, job_json(st.jobs[JobId("0001-abc")], with_log=True))
    _check(shapes.Event, event_json(st.revision, submitted))
    findings = [asdict(f) for f in verify(st, now=NOW)]
    _check(shapes.Verify, {"findings": findings, "errors": 0})


def test_the_document_is_openapi_3_1_with_every_schema_it_refers_to() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])
    body = doc["paths"]["/api/v1/instances/{name}/{action}"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("InstanceActionRequest")
    grow = doc["components"]["schemas"]["InstanceActionRequest"]["properties"]["amount_mib"]
    assert "maximum" in json.dumps(grow)  # the size rule every entry point shares
