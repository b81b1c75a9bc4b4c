"""Keep the simulator and corral's parsers honest against outputs captured from the
real tools on this machine (tests/fixtures/capture.sh): LVM's JSON reports and
error texts, and qemu's QMP replies."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from reactors.nodes.probe import parse_lvs, parse_vgs
from reactors.nodes.qmp import qmp_session
from simulators.lab import HostConfig, Lab

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real"


def shape(value: Any) -> Any:
    """Keys and value types, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[asyncssh.SSHClientConnection]:
    lab = await Lab.start(
        hosts=[HostConfig(name="node1", memory_mib=4096, disk_mib=196)],
        state_dir=tmp_path / "lab",
        control=False,
    )
    c = await asyncssh.connect(
        "127.0.0.1",
        lab.servers["node1"].port,
        username="root",
        client_keys=[str(lab.client_key_path)],
        known_hosts=str(lab.known_hosts_path),
    )
    try:
        yield c
    finally:
        c.close()
        await lab.stop()


async def test_lvm_json_and_errors_have_the_real_shape(conn: asyncssh.SSHClientConnection) -> None:
    assert (await conn.run("lvcreate -L 64m -n web-d0 corral -y")).exit_status == 0
    lvs = json.loads(
        str(
            (
                await conn.run(
                    "lvs --reportformat json --units m --nosuffix -o lv_name,vg_name,lv_size"
                )
            ).stdout
        )
    )
    real_lvs = json.loads((REAL / "lvs.json").read_text())
    assert shape({k: v for k, v in lvs["report"][0]["lv"][0].items() if k != "lv_attr"}) == shape(
        real_lvs["report"][0]["lv"][0]
    )
    vgs = json.loads(
        str(
            (
                await conn.run(
                    "vgs --reportformat json --units m --nosuffix -o vg_name,vg_size,vg_free"
                )
            ).stdout
        )
    )
    assert shape(vgs) == shape(json.loads((REAL / "vgs.json").read_text()))
    too_big = await conn.run("lvcreate -L 900m -n big corral -y")
    real = (REAL / "lvcreate-insufficient.txt").read_text().strip()
    pattern = re.escape(real).replace("corralfx", "corral")
    pattern = re.sub(r"\d+", r"\\d+", pattern)
    assert too_big.exit_status == 5 and re.fullmatch(pattern, str(too_big.stderr).strip())
    again = await conn.run("lvcreate -L 4m -n web-d0 corral -y")
    real = (REAL / "lvcreate-exists.txt").read_text().strip().replace("corralfx", "corral")
    assert str(again.stderr).strip() == real


def test_corral_parsers_read_the_real_lvm_output() -> None:
    vols = parse_lvs((REAL / "lvs.json").read_text())
    assert [(v.vg, v.name, v.size_mib) for v in vols] == [("corralfx", "web-d0", 64)]
    assert parse_vgs((REAL / "vgs.json").read_text(), volume_group="corralfx") == (196, 132)


async def test_qmp_replies_have_the_real_shape(conn: asyncssh.SSHClientConnection) -> None:
    real = json.loads((REAL / "qmp.json").read_text())
    await conn.run("lvcreate -L 64m -n d corral")
    assert (
        await conn.run(
            "qemu-system-x86_64 -name fx -m 64 -daemonize -pidfile /run/corral/fx.pid "
            "-qmp unix:/run/corral/fx.qmp,server=on,wait=off"
        )
    ).exit_status == 0
    reader, writer = await conn.open_unix_connection("/run/corral/fx.qmp")
    greeting = json.loads(await reader.readline())
    assert shape(greeting) == shape(real["greeting"])
    writer.write(b'{"execute": "qmp_capabilities"}\n')
    assert json.loads(await reader.readline()) == real["qmp_capabilities"]
    for cmd, key in (
        ("query-status", "query-status"),
        ("stop", "stop"),
        ("query-status", "query-status-paused"),
        ("cont", "cont"),
        ("query-migrate", "query-migrate-idle"),
        ("no-such-command", "unknown"),
    ):
        writer.write(json.dumps({"execute": cmd}).encode() + b"\n")
        reply = json.loads(await reader.readline())
        assert shape(reply) == shape(real[key]), cmd
        if key != "unknown":
            assert reply == real[key], cmd
        else:
            assert reply["error"]["class"] == real[key]["error"]["class"]
    (status,) = await qmp_session(
        *(await conn.open_unix_connection("/run/corral/fx.qmp")), [("query-status", None)]
    )
    assert status == real["query-status"]
