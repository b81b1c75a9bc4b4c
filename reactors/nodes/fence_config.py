"""Which fence agents an orchestrator host may run, with which options, and where
their secrets come from: host configuration (`/etc/corral/fencing.yaml`, `corral
serve --fencing-config`), not desired state. The desired state only picks one of
these agents for a node and passes the non-secret options the host allows.

Format:

    lab: false                  # the lab's fence_corral_sim only when true
    agents:
      fence_ipmilan:
        path: /usr/sbin/fence_ipmilan          # optional; else /usr/sbin, /sbin
        allow: [lanplus, method, power_wait]   # options the desired state may set
        options: {username: corral}            # fixed for every node
        secrets:                               # never from the desired state
          password: {file: /etc/corral/fence/{node}.password}   # or {env: VAR}
        nodes:                                 # fixed per node: where its BMC is
          node1: {ip: 10.0.1.1}

Why so strict: an agent gets the secret on stdin and its answer decides whether a
node counts as powered off. Whoever chooses the agent, its address or its plug can
send the password to a listener of theirs or make a fake "Powered OFF" come back,
after which failover would start a VM whose old primary still runs. So address
options (`ip`, `ipport`, ...) are never allowed from the desired state, options
that run or name local programs and files (`*_script`, `*_path`, `*_file`,
`ssh_options`) are refused outright, and the lab agent exists only in lab mode.

Holds the model and the file's parsing; reading secrets happens in
reactors.nodes.fencing, when an agent runs. Must not log secret values.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.fields.fence import FENCE_ADDRESS_OPTIONS, LAB_FENCE_AGENT, fence_option_refused

LAB_AGENT = LAB_FENCE_AGENT
_AGENT_RE = re.compile(r"fence_[a-z0-9_]+")
_OPTION_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_ENV_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
SEARCH = ("/usr/sbin", "/sbin", "/usr/bin")


class FencingConfigError(ValueError):
    """The fencing configuration cannot be used; one line naming the file and key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSource:
    """A file (one line; `{node}` is replaced by the node's name) or an
    environment variable of the orchestrator process."""

    file: str = ""
    env: str = ""

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"${self.env}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentPolicy:
    name: str
    path: str  # absolute path of the executable
    allow: frozenset[str] = frozenset()
    options: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, SecretSource], ...] = ()
    nodes: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class FencingConfig:
    agents: dict[str, AgentPolicy] = field(default_factory=dict)
    lab: bool = False
    source: str = "no fencing configuration"

    @classmethod
    def for_lab(cls) -> FencingConfig:
        """Lab mode alone: the simulator's agent, options from the desired state."""
        return cls(agents={LAB_AGENT: _lab_agent()}, lab=True, source="lab mode")

    def policy(self, agent: str) -> AgentPolicy:
        found = self.agents.get(agent)
        if found is None:
            if agent == LAB_AGENT and not self.lab:
                raise FencingConfigError(
                    f"fence agent {agent} is the lab's simulator agent: allowed only in lab mode"
                )
            raise FencingConfigError(
                f"fence agent {agent} is not allowed on this orchestrator host "
                f"(add it to {self.source})"
            )
        return found


def _lab_agent() -> AgentPolicy:
    here = Path(sys.executable).parent / LAB_AGENT
    path = str(here) if here.exists() else shutil.which(LAB_AGENT) or str(here)
    return AgentPolicy(name=LAB_AGENT, path=path, allow=frozenset({"ip", "ipport", "plug"}))


def _pairs(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise FencingConfigError(f"{where} must be a mapping of option: value")
    out = []
    for key, raw in value.items():
        name = _option_name(key, where)
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if "\n" in text:
            raise FencingConfigError(f"{where}.{name}: a value may not contain a newline")
        out.append((name, text))
    return tuple(out)


def _option_name(key: Any, where: str) -> str:
    if not isinstance(key, str) or not _OPTION_RE.fullmatch(key):
        raise FencingConfigError(f"{where}: {key!r} is not an option name")
    if fence_option_refused(key):
        raise FencingConfigError(
            f"{where}: option {key!r} runs or names a local program or file; corral "
            "never passes it to an agent"
        )
    return key


def _secret(value: Any, where: str) -> SecretSource:
    if not isinstance(value, dict) or len(value) != 1 or not ({"file", "env"} & set(value)):
        raise FencingConfigError(f"{where} must be {{file: PATH}} or {{env: VARIABLE}}")
    if "file" in value:
        path = value["file"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise FencingConfigError(f"{where}.file must be an absolute path")
        return SecretSource(file=path)
    env = value["env"]
    if not isinstance(env, str) or not _ENV_RE.fullmatch(env):
        raise FencingConfigError(f"{where}.env must be an environment variable name")
    return SecretSource(env=env)


def _agent(name: str, doc: Any, *, where: str, lab: bool) -> AgentPolicy:
    if not _AGENT_RE.fullmatch(name):
        raise FencingConfigError(f"{where}: {name!r} is not a fence agent name (fence_...)")
    if name == LAB_AGENT and not lab:
        raise FencingConfigError(f"{where}: {LAB_AGENT} is the lab's agent; only with `lab: true`")
    if not isinstance(doc, dict):
        raise FencingConfigError(f"{where} must be a mapping")
    unknown = set(doc) - {"path", "allow", "options", "secrets", "nodes"}
    if unknown:
        raise FencingConfigError(f"{where}: unknown keys {sorted(unknown)}")
    path = doc.get("path")
    if path is None:
        found = shutil.which(name, path=":".join(SEARCH))
        if found is None and name == LAB_AGENT:
            found = _lab_agent().path
        if found is None:
            raise FencingConfigError(f"{where}: {name} not found in {', '.join(SEARCH)}")
        path = found
    if not isinstance(path, str) or not path.startswith("/"):
        raise FencingConfigError(f"{where}.path must be an absolute path")
    allow_raw = doc.get("allow", [])
    if not isinstance(allow_raw, list):
        raise FencingConfigError(f"{where}.allow must be a list of option names")
    allow = frozenset(_option_name(o, f"{where}.allow") for o in allow_raw)
    addresses = allow & FENCE_ADDRESS_OPTIONS
    if addresses and name != LAB_AGENT:
        raise FencingConfigError(
            f"{where}.allow: {sorted(addresses)} name the fence device; set them per node "
            "under `nodes:` here, never from the desired state"
        )
    secrets_raw = doc.get("secrets", {})
    if not isinstance(secrets_raw, dict):
        raise FencingConfigError(f"{where}.secrets must be a mapping")
    secrets = tuple(
        (_option_name(k, f"{where}.secrets"), _secret(v, f"{where}.secrets.{k}"))
        for k, v in secrets_raw.items()
    )
    nodes_raw = doc.get("nodes", {})
    if not isinstance(nodes_raw, dict):
        raise FencingConfigError(f"{where}.nodes must be a mapping of node: options")
    nodes = {str(n): _pairs(o, f"{where}.nodes.{n}") for n, o in nodes_raw.items()}
    return AgentPolicy(
        name=name,
        path=path,
        allow=allow,
        options=_pairs(doc.get("options", {}), f"{where}.options"),
        secrets=secrets,
        nodes=nodes,
    )


def parse_fencing(doc: Any, *, source: str) -> FencingConfig:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise FencingConfigError(f"{source}: expected a mapping with `agents:`")
    unknown = set(doc) - {"lab", "agents"}
    if unknown:
        raise FencingConfigError(f"{source}: unknown keys {sorted(unknown)}")
    lab = doc.get("lab", False)
    if not isinstance(lab, bool):
        raise FencingConfigError(f"{source}: lab must be true or false")
    agents_raw = doc.get("agents", {}) or {}
    if not isinstance(agents_raw, dict):
        raise FencingConfigError(f"{source}: agents must be a mapping")
    agents = {
        str(name): _agent(str(name), body, where=f"{source}: agents.{name}", lab=lab)
        for name, body in agents_raw.items()
    }
    if lab and LAB_AGENT not in agents:
        agents[LAB_AGENT] = _lab_agent()
    return FencingConfig(agents=agents, lab=lab, source=source)


def load_fencing(path: Path) -> FencingConfig:
    """The host's fencing configuration; FencingConfigError naming the file."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text()
    except OSError as exc:
        raise FencingConfigError(f"fencing config {path}: {exc.strerror or exc}") from None
    try:
        doc = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise FencingConfigError(f"fencing config {path}: not YAML ({exc})") from None
    return parse_fencing(doc, source=str(path))
