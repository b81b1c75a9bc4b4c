"""LVM on a simulated host, with the real tools' argv, `--reportformat json`
output, error texts and exit codes: vgs, lvs, lvcreate, lvremove (refused while a
DRBD resource holds the volume), lvrename, lvextend.

No I/O: operates on `simulators.fabric` state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from simulators.fabric import Fabric, Host, Volume
from simulators.tools.registry import Result, tool


def _lvm_json(kind: str, rows: list[dict[str, str]]) -> str:
    # json.dumps({"report": [{kind: rows}]}, indent=2), item by item (`json_list`)
    inner = json_list(rows, level=3)
    return f'{{\n  "report": [\n    {{\n      {json.dumps(kind)}: {inner}\n    }}\n  ]\n}}\n'


# What `json.dumps(item, indent=2)` prints for each item a tool lists, keyed by
# its compact JSON: with indent, json encodes in Python, not C, and the probes of
# 200 hosts a second list the same LVs and resources over and over.
_INDENTED: dict[str, str] = {}


def json_list(items: Sequence[Mapping[str, object]], *, level: int) -> str:
    """`json.dumps(items, indent=2)` as printed `level` deep in a document."""
    if not items:
        return "[]"
    pad = "\n" + "  " * (level + 1)
    out = []
    for item in items:
        key = json.dumps(item)
        text = _INDENTED.get(key)
        if text is None:
            if len(_INDENTED) >= 100_000:
                _INDENTED.clear()
            text = _INDENTED[key] = json.dumps(item, indent=2)
        out.append(text.replace("\n", pad))
    return "[" + pad + ("," + pad).join(out) + "\n" + "  " * level + "]"


def _fmt_m(value: int, nosuffix: bool) -> str:
    return f"{value:.2f}" + ("" if nosuffix else "m")


@tool("vgs")
def _vgs(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    nosuffix = "--nosuffix" in argv
    row = {
        "vg_name": h.vg_name,
        "vg_size": _fmt_m(h.vg_size_mib, nosuffix),
        "vg_free": _fmt_m(h.vg_free_mib, nosuffix),
    }
    return Result(out=_lvm_json("vg", [row]))


@tool("lvs")
def _lvs(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    nosuffix = "--nosuffix" in argv
    rows = [
        {
            "lv_name": v.name,
            "vg_name": v.vg,
            "lv_size": _fmt_m(v.size_mib, nosuffix),
            "lv_attr": "-wi-a-----",
        }
        for v in sorted(h.volumes.values(), key=lambda v: v.name)
    ]
    return Result(out=_lvm_json("lv", rows))


def _size_arg(value: str) -> int:
    m = re.fullmatch(r"\+?(\d+)([mMgG]?)", value)
    if not m:
        raise ValueError(value)
    n = int(m.group(1))
    return n * 1024 if m.group(2) in ("g", "G") else n


@tool("lvcreate")
def _lvcreate(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    size = name = vg = None
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-L", "--size"):
            size = args[i + 1]
            i += 2
        elif a in ("-n", "--name"):
            name = args[i + 1]
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            vg = a
            i += 1
    if size is None or name is None or vg is None:
        return Result(rc=3, err="  Please specify either size or extents but not both.\n")
    try:
        mib = _size_arg(size)
    except ValueError:
        return Result(rc=3, err=f"  Invalid argument for --size: {size}\n")
    if vg != h.vg_name:
        return Result(rc=5, err=f'  Volume group "{vg}" not found\n')
    if name in h.volumes:
        return Result(
            rc=5, err=f'  Logical Volume "{name}" already exists in volume group "{vg}"\n'
        )
    if mib > h.vg_free_mib:
        extents = mib // 4
        free = h.vg_free_mib // 4
        return Result(
            rc=5,
            err=f'  Volume group "{vg}" has insufficient free space ({free} extents): '
            f"{extents} required.\n",
        )
    h.volumes[name] = Volume(vg=vg, name=name, size_mib=mib)
    return Result(out=f'  Logical volume "{name}" created.\n')


def lv_arg(h: Host, spec: str) -> Volume | None:
    vg, _, name = spec.removeprefix("/dev/").rpartition("/")
    vol = h.volumes.get(name)
    return vol if vol is not None and (not vg or vg == vol.vg) else None


@tool("lvremove")
def _lvremove(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    targets = [a for a in argv[1:] if not a.startswith("-")]
    for spec in targets:
        vol = lv_arg(h, spec)
        if vol is None:
            return Result(rc=5, err=f'  Failed to find logical volume "{spec}"\n')
        for copy in h.copies.values():
            if copy.up and any(
                hs.disk.endswith("/" + vol.name)
                for n, hs in copy.config.hosts.items()
                if n == h.name
            ):
                return Result(rc=5, err=f"  Logical volume {vol.vg}/{vol.name} in use.\n")
        del h.volumes[vol.name]
        for res in [  # their DRBD metadata lived on it
            r
            for r, c in h.copies.items()
            if h.name in c.config.hosts and lv_arg(h, c.config.hosts[h.name].disk) is None
        ]:
            del h.copies[res]
    return Result(
        out="".join(
            f'  Logical volume "{t.rpartition("/")[2]}" successfully removed.\n' for t in targets
        )
    )


@tool("lvrename")
def _lvrename(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    """`lvrename VG OLD NEW` as LVM 2.03 answers it. DRBD's internal metadata lives
    on the LV, so a (down) copy backed by OLD moves with it, keyed by the new name
    (corral names a resource after its LV)."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    if len(words) != 3:
        return Result(rc=3, err="  Old and new logical volume names required\n")
    vg, old, new = words
    vol = h.volumes.get(old)
    if vol is None or vol.vg != vg:
        return Result(
            rc=5, err=f'  Existing logical volume "{old}" not found in volume group "{vg}"\n'
        )
    if new in h.volumes:
        return Result(rc=5, err=f'  Logical Volume "{new}" already exists in volume group "{vg}"\n')
    backed = [
        r
        for r, c in h.copies.items()
        if h.name in c.config.hosts and lv_arg(h, c.config.hosts[h.name].disk) is vol
    ]
    if any(h.copies[r].up for r in backed):
        return Result(rc=5, err=f"  Logical volume {vg}/{old} in use.\n")
    del h.volumes[old]
    vol.name = new
    h.volumes[new] = vol
    for r in backed:
        moved = h.copies.pop(r)
        moved.name = new
        h.copies[new] = moved
    return Result(out=f'  Renamed "{old}" to "{new}" in volume group "{vg}"\n')


@tool("lvextend", "lvresize")
def _lvextend(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    size = None
    target = None
    args = argv[1:]
    i = 0
    while i < len(args):
        if args[i] in ("-L", "--size"):
            size = args[i + 1]
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            target = args[i]
            i += 1
    vol = lv_arg(h, target or "")
    if vol is None or size is None:
        return Result(rc=5, err=f'  Failed to find logical volume "{target}"\n')
    new = vol.size_mib + _size_arg(size) if size.startswith("+") else _size_arg(size)
    if new - vol.size_mib > h.vg_free_mib:
        return Result(rc=5, err=f"  Insufficient free space: {new - vol.size_mib} MiB required\n")
    if new < vol.size_mib:
        return Result(rc=5, err="  New size given is smaller than current size\n")
    vol.size_mib = new
    return Result(out=f"  Logical volume {vol.vg}/{vol.name} successfully resized.\n")
