"""The simulated tools print their JSON reports item by item (`json_list`, cached
per item): the text must be exactly what `json.dumps(..., indent=2)` prints, as the
parsers of real tools' output read it."""

from __future__ import annotations

import json

import pytest

from simulators.tools.lvm import _lvm_json, json_list


@pytest.mark.parametrize("count", [0, 1, 3])
def test_items_print_as_json_dumps_indent_2(count: int) -> None:
    items: list[dict[str, object]] = [
        {"name": f"r{i}", "peers": [{"a": i, "b": [1, {"c": None}]}], "e": [], "d": {}, "f": 1.5}
        for i in range(count)
    ]
    assert json_list(items, level=0) == json.dumps(items, indent=2)
    assert json_list(items, level=0) == json.dumps(items, indent=2)  # from the cache
    rows = [{"lv_name": f"lv{i}", "vg_name": "corral", "lv_size": "10.00m"} for i in range(count)]
    assert _lvm_json("lv", rows) == json.dumps({"report": [{"lv": rows}]}, indent=2) + "\n"
