"""The structured values of a desired-state file read into the model's value types:
a node's fence agent and its options (`fence`; secrets refused, each option held to
the agent's rules), an instance's disks and NICs (`disks`, `nics`) and hvparams
(`hvparams`), each key held to the model's field rule and every problem reported
at its line and column.

Pure: no I/O and no logging. A parser never raises: it records a problem and
returns None. Messages never repeat a value that may be a secret.
"""

from __future__ import annotations

from typing import Any

from events.fields.fence import option_name, option_value, selection_problems
from events.fields.network import interface
from events.fields.rules import FieldError
from events.specs import HV_FIELDS, DiskSpec, FenceSpec, HvParams, NicSpec
from events.validation import cross_problems
from orchestrator.desired import schema as s
from orchestrator.desired.schema import At, Problems, YamlMapping, kind, listed, rule, size

_FENCE_KEYS = ("agent", "options")
_NIC_KEYS = ("link", "mode", "mac", "ip", "gateway", "nameservers")
# A NIC rule spanning fields names the model's field; the file says it with this key.
_NIC_BLAME = {"prefix_len": "ip"}
_NO_OPTIONS: tuple[tuple[str, str], ...] = ()


# ------------------------------------------------------------------ fence agents


def fence(problems: Problems, value: Any, at: At) -> FenceSpec | None:
    if isinstance(value, dict) and "secrets" in value:
        problems.add(
            at,
            "fence secrets are not part of the desired state: the orchestrator hosts' "
            "fencing configuration (/etc/corral/fencing.yaml) says where each agent's "
            "secrets come from; remove `secrets:`",
        )
        return None
    m = YamlMapping(problems, value, at, allowed=_FENCE_KEYS, what="fence")
    if not m.ok:
        return None
    agent = m.req(
        "agent", rule(FenceSpec, "agent"), message="fence agent missing: `agent:` is required"
    )
    options = m.opt("options", _options, _NO_OPTIONS)
    if agent is None or options is None:
        return None
    spec = FenceSpec(agent=agent, options=options)
    chosen = selection_problems(agent, options)
    for message in chosen:
        problems.add(m.value_at("options"), message)
    if chosen:
        return None
    found = cross_problems(spec)
    for problem in found:
        where = problem.loc[0] if problem.loc else "agent"
        if where == "options" and len(problem.loc) > 1:
            key_at = m.key_at("options")
            opts = m.value.get("options")
            key = options[int(problem.loc[1])][0]
            key_at = s.located(lambda: opts.lc.key(key), key_at, key_at.sub(key))  # type: ignore[union-attr]  # noqa: B023
            problems.add(key_at, problem.message)
        else:
            problems.add(m.value_at(str(where)) if m.has(str(where)) else m.at, problem.message)
    return None if found else spec


def _option_key(problems: Problems, key: Any, at: At) -> str | None:
    try:
        return option_name(key)
    except FieldError as exc:
        problems.add(at, str(exc))
        return None


def _options(problems: Problems, value: Any, at: At) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, dict):
        problems.add(at, f"fence options must be a mapping, got {kind(value)}")
        return None
    m = YamlMapping(problems, value, at, allowed=None, what="fence options")
    out: list[tuple[str, str]] = []
    ok = True
    for key, raw in value.items():
        name = _option_key(problems, key, m.key_at(key))
        if name is None:
            ok = False
            continue
        try:
            out.append((name, option_value(s.plain(raw))))
        except FieldError as exc:
            problems.add(m.value_at(name), str(exc))
            ok = False
    return tuple(out) if ok else None


# ------------------------------------------------------------------ disks and NICs


def _disk(problems: Problems, value: Any, at: At) -> DiskSpec | None:
    if isinstance(value, dict):
        m = YamlMapping(problems, value, at, allowed=("size",), what="a disk")
        mib = m.req("size", size)
    else:
        mib = size(problems, value, at)
    return None if mib is None else DiskSpec(size_mib=mib)


disks = listed(_disk, what="disks", non_empty=True)


def _nic(problems: Problems, value: Any, at: At) -> NicSpec | None:
    m = YamlMapping(problems, value, at, allowed=_NIC_KEYS, what="a nic")
    if not m.ok:
        return None
    link = m.opt("link", rule(NicSpec, "link"), "br0")
    mode = m.opt("mode", rule(NicSpec, "mode"), "bridged")
    mac_address = m.opt("mac", rule(NicSpec, "mac"), "")
    no_ip: tuple[str, int | None] = ("", None)
    address = m.opt("ip", _nic_ip, no_ip)
    gateway = m.opt("gateway", rule(NicSpec, "gateway"), "")
    nameservers = m.opt("nameservers", rule(NicSpec, "nameservers"), ())
    if None in (link, mode, mac_address, address, gateway, nameservers):
        return None
    assert link is not None and mode is not None and address is not None
    nic = NicSpec(
        link=link,
        mode=mode,
        mac=mac_address or None,
        ip=address[0] or None,
        prefix_len=address[1],
        gateway=gateway or None,
        nameservers=tuple(nameservers or ()),
    )
    found = cross_problems(nic)
    for problem in found:
        key = _NIC_BLAME.get(str(problem.loc[0]), str(problem.loc[0]))
        problems.add(m.value_at(key) if m.has(key) else m.at, problem.message)
    return None if found else nic


def _nic_ip(problems: Problems, value: Any, at: At) -> tuple[str, int | None] | None:
    """`ip: ADDRESS` or `ip: ADDRESS/PREFIX`."""
    if not isinstance(value, str):
        problems.add(at, f"expected an IP address like '192.0.2.10/24', got {kind(value)}")
        return None
    try:
        return interface(value)
    except FieldError as exc:
        problems.add(at, str(exc))
        return None


nics = listed(_nic, what="nics")


def hvparams(problems: Problems, value: Any, at: At) -> HvParams | None:
    """`hvparams:` (Ganeti's kvm hvparams), each key held to the model's rule."""
    m = YamlMapping(problems, value, at, allowed=HV_FIELDS, what="hvparams")
    if not m.ok:
        return None
    got = {key: m.opt(key, rule(HvParams, key), "") for key in HV_FIELDS}
    if any(v is None for v in got.values()):
        return None
    return HvParams(**{k: str(v) for k, v in got.items()})
