"""DRBD's tools on a simulated host: drbdadm and drbdsetup as DRBD 9 or as the
distribution kernels' 8.4 (per host: `status --json` or only events2, error texts
naming the resource or the minor), /proc/drbd and events2, over
`simulators.drbd_model`.

No I/O: operates on `simulators.fabric` state.
"""

from __future__ import annotations

from simulators.drbd_model import Copy, DrbdError, ResourceConfig, parse_resource_file
from simulators.fabric import Fabric, Host, Volume
from simulators.tools.lvm import json_list, lv_arg
from simulators.tools.registry import Result, tool


def _load_config(h: Host, res: str) -> tuple[Copy | None, Result | None]:
    path = f"/etc/drbd.d/{res}.res"
    if path not in h.files:
        return None, Result(rc=10, err=f"'{res}' not defined in your config (for this host).\n")
    try:
        config = parse_resource_file(h.files[path].decode(), major=h.drbd_major, path=path)
    except DrbdError as exc:
        return None, Result(rc=10, err=f"{exc}\n")
    if h.name not in config.hosts:
        return None, Result(rc=10, err=f"'{res}' not defined in your config (for this host).\n")
    copy = h.copies.get(res)
    if copy is not None:
        copy.config = config
    return copy, None


def _config(h: Host, res: str) -> ResourceConfig:
    return parse_resource_file(h.files[f"/etc/drbd.d/{res}.res"].decode(), major=h.drbd_major)


def _backing(h: Host, res: str) -> Volume | None:
    copy_cfg = _config(h, res)
    disk = copy_cfg.hosts[h.name].disk
    return lv_arg(h, disk)


def _state_error(h: Host, res: str, verb: str, code: int, text: str) -> Result:
    """DRBD 9 names the resource; 8.4 (drbdsetup-84) names the minor."""
    if h.drbd_major < 9:
        minor = _config(h, res).hosts[h.name].minor
        return Result(
            rc=11,
            err=f"{minor}: State change failed: ({code}) {text}\n"
            f"Command 'drbdsetup-84 {verb} {minor}' terminated with exit code 11\n",
        )
    return Result(
        rc=11,
        err=f"{res}: State change failed: ({code}) {text}\n"
        f"Command 'drbdsetup {verb} {res}' terminated with exit code 11\n",
    )


def _two_primaries_refused(h: Host, cfg: ResourceConfig) -> Result:
    me = cfg.hosts[h.name]
    peer = next(x for n, x in cfg.hosts.items() if n != h.name)
    tool = (
        "drbdsetup-84 net-options"
        if h.drbd_major < 9
        else f"drbdsetup net-options {cfg.name} {peer.node_id}"
    )
    where = (
        f" ipv4:{me.address}:{me.port} ipv4:{peer.address}:{peer.port}" if h.drbd_major < 9 else ""
    )
    return Result(
        rc=1,
        err="??: Failure: (164) Can not clear allow_two_primaries as long as\n"
        "there a primaries on both sides\n"
        f"Command '{tool}{where} --set-defaults --protocol=C --allow-two-primaries=no "
        "--after-sb-0pri=discard-zero-changes --after-sb-1pri=disconnect "
        "--after-sb-2pri=disconnect' terminated with exit code 10\n",
    )


@tool("drbdadm")
def _drbdadm(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    args = [a for a in argv[1:]]
    force = "--force" in args
    discard = "--discard-my-data" in args
    words = [a for a in args if not a.startswith("--")]
    if len(words) != 2:
        return Result(rc=20, err="USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}\n")
    cmd, res = words
    f.tick(only={res})
    before = h.copies[res].config if res in h.copies else None
    copy, error = _load_config(h, res)
    if error is not None:
        return error
    cfg = _config(h, res)
    minor = cfg.hosts[h.name].minor
    if cmd == "create-md":
        vol = _backing(h, res)
        if vol is None:
            return Result(
                rc=10, err=f"open({cfg.hosts[h.name].disk}) failed: No such file or directory\n"
            )
        if copy is not None and copy.up:
            return Result(rc=20, err=f"Device '{minor}' is configured!\n")
        h.copies[res] = Copy(name=res, config=cfg, size_mib=vol.size_mib)
        if h.drbd_major < 9:
            return Result(
                out="initializing bitmap (8 KB) to all zero\ninitializing activity log\n"
                "Writing meta data...\nNew drbd meta data block successfully created.\n"
            )
        return Result(
            out="initializing activity log\ninitializing bitmap (32 KB) to all zero\n"
            "Writing meta data...\nNew drbd meta data block successfully created.\n"
        )
    if copy is None and cmd == "down":
        return Result(rc=10, err=f"{res}: No such resource\n")
    if copy is None:
        vol = _backing(h, res)
        if vol is None:
            return Result(
                rc=10, err=f"open({cfg.hosts[h.name].disk}) failed: No such file or directory\n"
            )
        return Result(
            rc=255,
            err=f"No valid meta data found\nCommand 'drbdmeta {minor} "
            f"v0{h.drbd_major} {cfg.hosts[h.name].disk} "
            "internal apply-al' terminated with exit code 255\n",
        )
    if cmd in ("up", "adjust"):
        if (
            cmd == "adjust"
            and copy.up
            and before is not None
            and before.allow_two_primaries
            and not cfg.allow_two_primaries
            and copy.role == "Primary"
            and (link := f.link(h.name, res)) is not None
            and link.connection == "Connected"
            and link.peer_role == "Primary"
        ):
            copy.config = before  # the kernel keeps the old net options
            return _two_primaries_refused(h, cfg)
        if res in h.failed_disks:
            copy.disk = "Failed"
        copy.up = True
        if cmd == "adjust":
            copy.standalone = False
        vol = _backing(h, res)
        if vol is not None:
            copy.size_mib = vol.size_mib
        f.tick(only={res})
        return Result()
    if not copy.up:
        return Result(rc=10, err=f"{res}: No such resource\n")
    if cmd == "down":
        if copy.role == "Primary" and h.holder_of(minor):
            return _state_error(h, res, "down", -12, "Device is held open by someone")
        copy.up = False
        copy.role = "Secondary"
        f.tick(only={res})
        return Result()
    if cmd == "primary":
        peer = f.peer_copy(h.name, res)
        link = f.link(h.name, res)
        if (
            peer is not None
            and link is not None
            and link.connection == "Connected"
            and peer[1].role == "Primary"
            and not copy.config.allow_two_primaries
        ):
            return _state_error(h, res, "primary", -1, "Multiple primaries not allowed by config")
        if copy.disk != "UpToDate":
            if not force or copy.disk in ("Failed", "Diskless"):
                return _state_error(h, res, "primary", -2, "Need access to UpToDate data")
            copy.disk = "UpToDate"
            copy.history.append(copy.current)
            copy.current = _new_gen()
        if copy.role != "Primary" and (link is None or link.connection != "Connected"):
            copy.history.append(copy.current)
            copy.current = _new_gen()
        copy.role = "Primary"
        f.tick(only={res})
        return Result()
    if cmd == "secondary":
        if h.holder_of(minor):
            return _state_error(h, res, "secondary", -12, "Device is held open by someone")
        copy.role = "Secondary"
        return Result()
    if cmd == "disconnect":
        copy.standalone = True
        f.tick(only={res})
        return Result()
    if cmd == "connect":
        copy.standalone = False
        copy.discard_my_data = discard
        f.tick(only={res})
        return Result()
    if cmd == "outdate":
        if copy.role == "Primary":
            return _state_error(h, res, "outdate", -2, "Refusing to be Outdated while Primary")
        copy.disk = "Outdated"
        return Result()
    if cmd == "resize":
        vol = _backing(h, res)
        if vol is not None:
            copy.size_mib = vol.size_mib
        return Result()
    return Result(rc=20, err=f"Unknown command '{cmd}'\n")


def _new_gen() -> int:
    from simulators.drbd_model import new_uuid

    return new_uuid()


DRBDSETUP_84_USAGE = (
    "\nUSAGE: drbdsetup command device arguments options\n\n"
    "Device is usually /dev/drbdX or /dev/drbd/X.\n\nCommands are:\n"
)


def proc_drbd(f: Fabric, h: Host) -> str:
    if h.drbd_major >= 9:
        return (
            f"version: {h.drbd_version} (api:2/proto:86-122)\n"
            "GIT-hash: 0000000000000000000000000000000000000000 build by corral-sim\n"
            f"Transports (api:18): tcp ({h.drbd_version})\n"
        )
    lines = [
        f"version: {h.drbd_version} (api:1/proto:86-101)\n",
        "srcversion: F73C670A7EC572DB9CF3E5B \n",
    ]
    for res, copy in sorted(h.copies.items(), key=lambda kv: kv[1].config.hosts[h.name].minor):
        if not copy.up:
            continue
        link = f.link(h.name, res)
        assert link is not None
        cs = {"Connecting": "WFConnection", "Connected": link.replication}.get(
            link.connection, link.connection
        )
        cs = "Connected" if cs == "Established" else cs
        lines.append(
            f" {copy.config.hosts[h.name].minor}: cs:{cs} ro:{copy.role}/{link.peer_role} "
            f"ds:{copy.disk}/{link.peer_disk} C r-----\n"
            "    ns:0 nr:0 dw:0 dr:0 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n"
        )
    return "".join(lines)


def _events2(f: Fabric, h: Host, names: list[str], statistics: bool) -> str:
    """`drbdsetup events2 --now [--statistics]` as 8.4 prints it (captured), and as
    DRBD 9 does with its connections named after the peer host."""
    lines = []
    for res, copy in sorted(h.copies.items()):
        if not copy.up or (names and res not in names):
            continue
        me = copy.config.hosts[h.name]
        peer_name, peer = next((n, x) for n, x in copy.config.hosts.items() if n != h.name)
        link = f.link(h.name, res)
        assert link is not None
        conn = (
            "peer-node-id:0 conn-name:peer"
            if h.drbd_major < 9
            else (f"peer-node-id:{peer.node_id} conn-name:{peer_name}")
        )
        size = copy.size_mib * 1024
        oos = 0 if link.percent >= 100 else int(size * (100 - link.percent) / 100)
        lines.append(
            f"exists resource name:{res} role:{copy.role} suspended:no"
            + (" write-ordering:flush" if statistics else "")
        )
        lines.append(
            f"exists connection name:{res} {conn} connection:{link.connection} "
            f"role:{link.peer_role}" + (" congested:no" if statistics else "")
        )
        lines.append(
            f"exists device name:{res} volume:0 minor:{me.minor} disk:{copy.disk}"
            + (
                f" size:{size} read:0 written:0 al-writes:0 bm-writes:0 upper-pending:0"
                " lower-pending:0 al-suspended:no blocked:no"
                if statistics
                else ""
            )
        )
        lines.append(
            f"exists peer-device name:{res} {conn} volume:0 replication:{link.replication} "
            f"peer-disk:{link.peer_disk} resync-suspended:no"
            + (f" received:0 sent:0 out-of-sync:{oos} pending:0 unacked:0" if statistics else "")
        )
    lines.append("exists -")
    return "\n".join(lines) + "\n"


@tool("drbdsetup")
def _drbdsetup(f: Fabric, h: Host, argv: list[str], stdin: bytes) -> Result:
    f.tick_host(h.name)
    names = [a for a in argv[2:] if not a.startswith("--")]
    if len(argv) >= 2 and argv[1] == "events2" and "--now" in argv:
        return Result(out=_events2(f, h, names, "--statistics" in argv))
    if len(argv) < 2 or argv[1] != "status" or "--json" not in argv:
        return Result(
            rc=20, err="drbdsetup: only 'status --json' and 'events2 --now' are simulated\n"
        )
    if h.drbd_major < 9:
        # as 8.4's drbdsetup does: the complaint on stderr, its usage on stdout
        return Result(rc=20, out=DRBDSETUP_84_USAGE, err="status: unrecognized option '--json'\n")
    out = []
    for res, copy in sorted(h.copies.items()):
        if not copy.up or (names and res not in names):
            continue
        me = copy.config.hosts[h.name]
        connections = []
        for peer_name, section in sorted(copy.config.hosts.items()):
            if peer_name == h.name:
                continue
            link = f.link(h.name, res)
            assert link is not None
            oos = (
                0 if link.percent >= 100 else int(copy.size_mib * 1024 * (100 - link.percent) / 100)
            )
            connections.append(
                {
                    "peer-node-id": section.node_id,
                    "name": peer_name,
                    "connection-state": link.connection,
                    "congested": False,
                    "peer-role": link.peer_role,
                    "ap-in-flight": 0,
                    "rs-in-flight": 0,
                    "peer_devices": [
                        {
                            "volume": 0,
                            "replication-state": link.replication,
                            "peer-disk-state": link.peer_disk,
                            "peer-client": False,
                            "resync-suspended": "no",
                            "received": 0,
                            "sent": 0,
                            "out-of-sync": oos,
                            "pending": 0,
                            "unacked": 0,
                            "has-sync-details": link.replication.startswith("Sync"),
                            "has-online-verify-details": False,
                            "percent-in-sync": link.percent,
                        }
                    ],
                }
            )
        out.append(
            {
                "name": res,
                "node-id": me.node_id,
                "role": copy.role,
                "suspended": False,
                "write-ordering": "flush",
                "devices": [
                    {
                        "volume": 0,
                        "minor": me.minor,
                        "disk-state": copy.disk,
                        "client": False,
                        "quorum": True,
                        "size": copy.size_mib * 1024,
                        "read": 0,
                        "written": 0,
                        "al-writes": 0,
                        "bm-writes": 0,
                        "upper-pending": 0,
                        "lower-pending": 0,
                    }
                ],
                "connections": connections,
            }
        )
    return Result(out=json_list(out, level=0) + "\n")
