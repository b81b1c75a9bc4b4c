"""`corral sim ...`: start, stop, inspect and break a lab of simulated nodes.

    corral sim up [--nodes 4] [--memory 24G] [--disk 730G] [--cpus 8]
                  [--node name=n5,memory=64G,disk=2T,cpus=16 ...] [--state-dir ./var/lab]
    corral sim status | down
    corral sim fault crash|partition|heal|kill-vm NODE [--vm NAME] [--from-peers] [--peers-only]
    corral sim fault cut-link|restore-link NODE --peer OTHER
    corral sim fault fail-disk NODE --resource RES
    corral sim fault fail-command|slow-command|hang-command NODE --match TEXT
                     [--nth N] [--seconds S]
    corral sim fault clear-commands NODE
    corral sim power on|off NODE

Imports nothing from corral's own packages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from simulators.lab import HostConfig

FAULT_KINDS = [
    "crash",
    "partition",
    "heal",
    "kill-vm",
    "cut-link",
    "restore-link",
    "fail-disk",
    "fail-command",
    "slow-command",
    "hang-command",
    "clear-commands",
]
_SIZE = re.compile(r"^(\d+)([MGT]?)$", re.I)


def parse_size(value: str, *, what: str) -> int:
    m = _SIZE.match(value.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{what}: expected a size like 512M, 24G or 2T")
    n, unit = int(m.group(1)), m.group(2).upper()
    return n * {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]


def add_sim_parser(sub: Any) -> None:
    sim = sub.add_parser("sim", help="a lab of simulated nodes (real SSH servers)")
    ss = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)
    up = ss.add_parser("up", help="start a lab in the background")
    up.add_argument("--nodes", type=int, default=4)
    up.add_argument("--memory", default="24G")
    up.add_argument("--disk", default="730G")
    up.add_argument("--cpus", type=int, default=8)
    up.add_argument(
        "--node",
        action="append",
        default=[],
        help="one node with its own sizes: name=n5,memory=64G,disk=2T,cpus=16",
    )
    up.add_argument("--sync-rate", default="1G", help="DRBD resync speed per second")
    up.add_argument(
        "--from-htools",
        type=Path,
        help="nodes with the sizes of an htools text file's nodes (replaces --nodes)",
    )
    status = ss.add_parser("status", help="power, VMs and isolation of every lab node")
    status.add_argument("--json", action="store_true", help="print JSON")
    ss.add_parser("down", help="stop the lab")
    fault = ss.add_parser("fault", help="inject a fault")
    fault.add_argument("kind", choices=FAULT_KINDS)
    fault.add_argument("node")
    fault.add_argument("--vm", help="kill-vm: the VM to kill")
    fault.add_argument(
        "--from-peers",
        action="store_true",
        help="partition from DRBD peers too (default: orchestrator only)",
    )
    fault.add_argument(
        "--peers-only",
        action="store_true",
        help="partition from DRBD peers only; the orchestrator still reaches the node",
    )
    fault.add_argument("--peer", help="cut-link/restore-link: the other end")
    fault.add_argument("--resource", help="fail-disk: the DRBD resource whose disk fails")
    fault.add_argument("--match", help="*-command: a substring of the command line")
    fault.add_argument(
        "--nth", type=int, default=0, help="*-command: only the Nth match (1-based); 0 = every"
    )
    fault.add_argument("--seconds", type=float, default=0.0, help="slow-command: added delay")
    power = ss.add_parser("power", help="power a node on or off")
    power.add_argument("action", choices=["on", "off"])
    power.add_argument("node")
    for p in ss.choices.values():
        p.add_argument("--state-dir", type=Path, default=Path("var/lab"))


def hosts_from_htools(text: str, *, source: str) -> list[HostConfig]:
    """The nodes section (the second) of an htools text file (`hbal -t` format:
    name|t_mem|n_mem|f_mem|t_dsk|f_dsk|t_cpu|...), as lab hosts of the same sizes.
    Names are lowercased; a node named like an FQDN keeps its dots."""
    sections = text.split("\n\n")
    if len(sections) < 2:
        raise argparse.ArgumentTypeError(f"{source}: not an htools text file (no nodes section)")
    hosts = []
    for lineno, line in enumerate(
        sections[1].splitlines(), start=len(sections[0].splitlines()) + 2
    ):
        if not line.strip():
            continue
        cols = line.split("|")
        try:
            name, t_mem, t_dsk, t_cpu = cols[0].lower(), int(cols[1]), int(cols[4]), int(cols[6])
        except (IndexError, ValueError):
            raise argparse.ArgumentTypeError(
                f"{source}:{lineno}: not a node line (name|t_mem|n_mem|f_mem|t_dsk|f_dsk|t_cpu|...)"
            ) from None
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,62}", name) or min(t_mem, t_dsk, t_cpu) <= 0:
            raise argparse.ArgumentTypeError(f"{source}:{lineno}: bad node {cols[0]!r}")
        hosts.append(HostConfig(name=name, memory_mib=t_mem, disk_mib=t_dsk, cpus=t_cpu))
    return hosts


def _hosts(args: argparse.Namespace) -> list[HostConfig]:
    memory = parse_size(args.memory, what="--memory")
    disk = parse_size(args.disk, what="--disk")
    hosts = [
        HostConfig(name=f"node{i + 1}", memory_mib=memory, disk_mib=disk, cpus=args.cpus)
        for i in range(args.nodes)
    ]
    if args.from_htools is not None:
        try:
            text = args.from_htools.read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"--from-htools: {exc}") from exc
        hosts = hosts_from_htools(text, source=str(args.from_htools))
    for spec in args.node:
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        if "name" not in fields:
            raise argparse.ArgumentTypeError(f"--node {spec!r}: name=... is required")
        hosts.append(
            HostConfig(
                name=fields["name"],
                memory_mib=parse_size(fields.get("memory", args.memory), what="--node memory"),
                disk_mib=parse_size(fields.get("disk", args.disk), what="--node disk"),
                cpus=int(fields.get("cpus", args.cpus)),
            )
        )
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"duplicate node names in {names}")
    return hosts


def _inventory(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "inventory.json"
    if not path.exists() or not (state_dir / "lab.pid").exists():
        raise SystemExit(
            f"corral sim: no lab running in {state_dir} (start one with corral sim up)"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _post(url: str, body: dict[str, Any] | None) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"corral sim: {exc.read().decode(errors='replace')}") from exc
    except OSError as exc:
        raise SystemExit(f"corral sim: the lab's control API does not answer ({exc})") from exc


def run_sim(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if args.sim_command == "up":
        try:
            hosts = _hosts(args)
            rate = parse_size(args.sync_rate, what="--sync-rate")
        except argparse.ArgumentTypeError as exc:
            print(f"corral sim up: {exc}", file=sys.stderr)
            return 1
        if (state_dir / "lab.pid").exists():
            print(
                f"corral sim up: a lab already runs in {state_dir} (corral sim down first)",
                file=sys.stderr,
            )
            return 1
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "inventory.json").unlink(missing_ok=True)
        log = open(state_dir / "lab.log", "ab")  # noqa: SIM115 - owned by the child
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators.lab_process",
                "--state-dir",
                str(state_dir),
                "--hosts",
                json.dumps([asdict(h) for h in hosts]),
                "--sync-rate",
                str(rate),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (state_dir / "inventory.json").exists() and (state_dir / "lab.pid").exists():
                inv = json.loads((state_dir / "inventory.json").read_text())
                print(
                    f"lab up: {len(inv['nodes'])} nodes; inventory {state_dir / 'inventory.json'}"
                )
                for n in inv["nodes"]:
                    print(
                        f"  {n['name']:<10} ssh 127.0.0.1:{n['port']}  "
                        f"{n['memory_mib'] // 1024}G RAM  {n['disk_mib'] // 1024}G disk  "
                        f"{n['cpus']} cpus"
                    )
                return 0
            time.sleep(0.1)
        print(f"corral sim up: the lab did not start; see {state_dir / 'lab.log'}", file=sys.stderr)
        return 1
    inv = _inventory(state_dir)
    if args.sim_command == "down":
        pid = int((state_dir / "lab.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not (state_dir / "lab.pid").exists():
                break
            time.sleep(0.05)
        print("lab down")
        return 0
    url = inv["control_url"]
    if args.sim_command == "status":
        status = _post(f"{url}/status", None)
        if getattr(args, "json", False):
            print(json.dumps(status, indent=2))
            return 0
        for name, node in sorted(status["nodes"].items()):
            extra = " (cut off from the orchestrator)" if node["isolated"] else ""
            print(f"{name:<10} power {node['power']:<4} vms {len(node['vms'])}{extra}")
        return 0
    if args.sim_command == "power":
        print(json.dumps(_post(f"{url}/power", {"node": args.node, "action": args.action})))
        return 0
    if args.sim_command == "fault":
        body: dict[str, Any] = {"kind": args.kind, "node": args.node}
        if args.kind == "partition":
            body.update(
                from_orchestrator=not args.peers_only,
                from_peers=args.from_peers or args.peers_only,
            )
        for field in ("vm", "peer", "resource", "match"):
            if getattr(args, field) is not None:
                body[field] = getattr(args, field)
        if args.kind.endswith("-command"):
            body.update(nth=args.nth, seconds=args.seconds)
        print(json.dumps(_post(f"{url}/fault", body)))
        return 0
    return 1
