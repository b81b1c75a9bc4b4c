"""A NIC's addressing in the desired-state file (`ip` with its prefix length,
`gateway`, `nameservers`), each mistake a problem at its line and field, and the
seed's network-config that carries it to the guest: read back by cloud-init's own
parser (Debian's cloud-init, in the system Python, when installed) as the static
address, default route and DNS servers the file gave."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

from ruamel.yaml import YAML

from events.ids import InstanceName
from events.specs import CloudInitSpec, NicSpec
from reactors.nodes.cloud_init import seed_texts
from tests.support.tools import require_tool
from tests.unit.desired.test_desired_file import MINIMAL, load, one_problem, problems_of

NICS = """    nics:
      - {link: br0, mac: "aa:00:00:00:00:01", ip: 192.0.2.10/26, gateway: 192.0.2.1,
         nameservers: [192.0.2.53, "2001:db8::53"]}
      - {link: br1, mac: "aa:00:00:00:00:02", nameservers: [192.0.2.53]}
      - {link: br2, mac: "aa:00:00:00:00:03", ip: "2001:db8:1::5/48", gateway: "2001:db8:1::1"}
      - {link: br3, mac: "aa:00:00:00:00:04", ip: 198.51.100.7}
"""
# cloud-init's reading of a network-config text: per interface its MAC and subnets
# (type, address, prefix, routes, DNS servers), as cloud-init's renderers get them.
READ_BY_CLOUD_INIT = """
import json, sys
from cloudinit import safeyaml
from cloudinit.net import network_state
state = network_state.parse_net_config_data(safeyaml.load(sys.stdin.read()))
print(json.dumps({"dns": state.dns_nameservers, **{
    i["name"]: {"mac": i["mac_address"], "subnets": i["subnets"]} for i in state.iter_interfaces()
}}))
"""


def with_nics(nics: str) -> str:
    return MINIMAL.replace("    disks: [10G]\n", "    disks: [10G]\n" + nics)


def _web_nics() -> tuple[NicSpec, ...]:
    return load(with_nics(NICS)).cluster.instances[InstanceName("vm01")].nics


def test_the_file_gives_prefix_gateway_and_nameservers_per_nic() -> None:
    first, dhcp, six, plain = _web_nics()
    assert (first.ip, first.prefix_len, first.gateway) == ("192.0.2.10", 26, "192.0.2.1")
    assert first.nameservers == ("192.0.2.53", "2001:db8::53")
    assert (dhcp.ip, dhcp.gateway, dhcp.nameservers) == (None, None, ("192.0.2.53",))
    assert (six.ip, six.prefix_len, six.gateway) == ("2001:db8:1::5", 48, "2001:db8:1::1")
    assert (plain.ip, plain.prefix_len, plain.gateway, plain.nameservers) == (
        "198.51.100.7",
        None,
        None,
        (),
    )


def _network_config() -> str:
    spec = load(with_nics(NICS)).cluster.instances[InstanceName("vm01")]
    return seed_texts(replace(spec, cloud_init=CloudInitSpec()), instance_id="vm01-1")[
        "network_config"
    ]


def test_the_seed_network_config_carries_them() -> None:
    net = YAML(typ="safe").load(_network_config())
    eth = net["ethernets"]
    assert eth["nic0"]["addresses"] == ["192.0.2.10/26"]
    assert eth["nic0"]["gateway4"] == "192.0.2.1"
    assert eth["nic0"]["nameservers"] == {"addresses": ["192.0.2.53", "2001:db8::53"]}
    assert eth["nic1"] == {
        "match": {"macaddress": "aa:00:00:00:00:02"},
        "set-name": "eth1",
        "dhcp4": True,
        "nameservers": {"addresses": ["192.0.2.53"]},
    }
    assert eth["nic2"]["addresses"] == ["2001:db8:1::5/48"]
    assert eth["nic2"]["gateway6"] == "2001:db8:1::1"
    # No prefix given: the old defaults; no gateway or DNS: none set.
    assert eth["nic3"] == {
        "match": {"macaddress": "aa:00:00:00:00:04"},
        "set-name": "eth3",
        "addresses": ["198.51.100.7/24"],
    }


def test_cloud_init_reads_the_address_route_and_dns(tmp_path: Path) -> None:
    require_tool("/usr/lib/python3/dist-packages/cloudinit", "cloud-init")
    got = subprocess.run(
        ["/usr/bin/python3", "-c", READ_BY_CLOUD_INIT],
        input=_network_config(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    ifaces = json.loads(got.stdout)
    (first,) = ifaces["eth0"]["subnets"]
    assert ifaces["eth0"]["mac"] == "aa:00:00:00:00:01"
    assert (first["type"], first["address"], first["prefix"]) == ("static", "192.0.2.10", 26)
    assert first["gateway"] == "192.0.2.1"
    assert first["dns_nameservers"] == ["192.0.2.53", "2001:db8::53"]
    (dhcp,) = ifaces["eth1"]["subnets"]
    assert dhcp["type"] == "dhcp4"
    assert "192.0.2.53" in ifaces["dns"]  # a DHCP NIC's servers: cloud-init's global list
    (six,) = ifaces["eth2"]["subnets"]
    assert (six["address"], six["prefix"], six["gateway"]) == ("2001:db8:1::5", 48, "2001:db8:1::1")
    assert six.get("routes", []) == []  # the default route is the gateway, nothing else
    (plain,) = ifaces["eth3"]["subnets"]
    assert (plain["address"], plain["prefix"]) == ("198.51.100.7", 24)
    assert "gateway" not in plain and not plain.get("routes")


def test_bad_addressing_is_refused_at_its_line_and_field() -> None:
    field = "instances[vm01].nics[0]"
    for nic, key, says in (
        ("{ip: 192.0.2.10/33}", "ip", "/33 is longer than an IPv4 address"),
        ("{ip: 192.0.2.10/x}", "ip", "the prefix length after '/' must be a number"),
        ("{ip: 192.0.2.300/24}", "ip", "is not an IPv4 or IPv6 address"),
        ("{ip: 192.0.2.0/24}", "ip", "is the network's own address in 192.0.2.0/24"),
        ("{ip: 192.0.2.10/24, gateway: 192.0.3.1}", "gateway", "not in the NIC's network"),
        ("{ip: 192.0.2.10, gateway: 192.0.2.10}", "gateway", "the NIC's own address"),
        ('{ip: 192.0.2.10, gateway: "2001:db8::1"}', "gateway", "is IPv6 but ip"),
        ("{gateway: 192.0.2.1}", "gateway", "a gateway needs a fixed ip"),
        ("{nameservers: [1.1.1.1, 1.0.0.1, 8.8.8.8, 9.9.9.9]}", "nameservers", "at most 3"),
        ("{nameservers: [dns.example.org]}", "nameservers[0]", "not an IPv4 or IPv6"),
        ("{nameservers: 1.1.1.1}", "nameservers", ""),
    ):
        problem = one_problem(
            with_nics(f"    nics: [{nic}]\n"), field=f"{field}.{key}", contains=says
        )
        assert problem.line == 20, (nic, problem)
        assert len(problems_of(with_nics(f"    nics: [{nic}]\n"))) == 1, nic
