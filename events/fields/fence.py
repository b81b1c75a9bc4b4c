"""Fence-agent fields: the agent's name, option names and one-line option values,
and what an entry point (a desired-state file, `corral node add`) may choose: no
secret (option names that look like one are refused), no address of the fence
device and no option that runs or names a program or file on the orchestrator
host; those are the hosts' fencing configuration (reactors.nodes.fence_config),
which enforces the same again when an agent runs. Events recorded before these
rules still decode: the rules are the entry points', not the codec's.

Pure: no I/O, no logging. No message repeats an option value or a secret reference.
"""

from __future__ import annotations

import re
from typing import Annotated

from events.fields.rules import FieldError, before, kind, schema, show

_AGENT_RE = re.compile(r"fence_[a-z0-9_]+")
_OPTION_RE = re.compile(r"[a-z][a-z0-9_-]*")
SECRET_LIKE_RE = re.compile(r"pass|secret|token|credential|(^|[_-])(key|psk)([_-]|$)")


def _agent(value: object) -> str:
    if not isinstance(value, str) or not _AGENT_RE.fullmatch(value) or len(value) > 64:
        raise FieldError(
            f"{show(value)} is not a fence agent name; expected fence_ followed by "
            "lowercase letters, digits or '_' (e.g. fence_ipmilan)"
        )
    return value


def option_name(value: object) -> str:
    if not isinstance(value, str) or not _OPTION_RE.fullmatch(value) or len(value) > 64:
        raise FieldError(
            f"option name {show(value)} must be lowercase letters, digits, '_' or '-', "
            "starting with a letter"
        )
    return value


def option_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        text = str(value)
        if any(c in text for c in "\n\r\0") or len(text) > 1024:
            raise FieldError("an option value must be one line of at most 1024 characters")
        return text
    raise FieldError(f"an option value must be a string, number or boolean, got {kind(value)}")


FenceAgent = Annotated[str, before(_agent), schema(type="string", pattern="^fence_[a-z0-9_]+$")]
OptionName = Annotated[
    str, before(option_name), schema(type="string", pattern="^[a-z][a-z0-9_-]*$")
]
OptionValue = Annotated[str, before(option_value), schema(type="string", maxLength=1024)]

# The lab's simulator agent: only an orchestrator host in lab mode runs it.
LAB_FENCE_AGENT = "fence_corral_sim"
# Options naming the fence device (where the secret goes, whose "off" counts).
FENCE_ADDRESS_OPTIONS = frozenset(
    {"ip", "ipaddr", "ipport", "ip_address", "hostname", "host", "port_as_ip", "udpport"}
)
_LOCAL_OPTION_RE = re.compile(r".*(_script|_path|_file)|ssh_options|ssl_options|identity_file")


def fence_option_refused(name: str) -> bool:
    """An option no fence agent gets from anyone: it runs or names a program or
    file on the orchestrator host (`password_script`, `ipmitool_path`...)."""
    return bool(_LOCAL_OPTION_RE.fullmatch(name))


def selection_problems(agent: str, options: tuple[tuple[str, str], ...]) -> list[str]:
    """What a desired state may not choose for a node's fencing (messages never
    repeat an option's value)."""
    out = [
        f"{name!r} runs or names a program or file on the orchestrator host; corral "
        "never passes it to a fence agent"
        for name, _ in options
        if fence_option_refused(name)
    ]
    addresses = sorted({k for k, _ in options} & FENCE_ADDRESS_OPTIONS)
    if addresses and agent != LAB_FENCE_AGENT:
        out.append(
            f"{', '.join(addresses)}: the fence device's address is set per node in the "
            "orchestrator hosts' fencing configuration (/etc/corral/fencing.yaml), not here"
        )
    return out
