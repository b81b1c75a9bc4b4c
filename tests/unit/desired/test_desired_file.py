"""The desired-state loader (`orchestrator.desired.file`): the seed example loads into
the demo's specs; every kind of mistake is reported with file, line, column and field,
all at once; directories merge; fence secrets and addresses are refused; and no input text makes the
loader raise anything but DesiredFileError. Pure: no etcd, no nodes."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.demo import seed_instances
from events.ids import GroupName, InstanceName, NodeName
from events.specs import PowerState
from orchestrator.desired.file import (
    DesiredFile,
    DesiredFileError,
    FileProblem,
    load_desired,
    parse_desired,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "seed-cluster.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text()

MINIMAL = """\
cluster:
  name: test
nodes:
  - name: node1
    address: 10.0.0.1
    memory: 8G
    disk: 100G
    cpus: 4
    fence: {agent: fence_ipmilan, options: {lanplus: 1}}
  - name: node2
    address: 10.0.0.2
    memory: 16G
    disk: 200G
    cpus: 4
    fence: {agent: fence_ipmilan, options: {lanplus: 1}}
instances:
  - name: vm01
    memory: 1G
    disks: [10G]
"""


def problems_of(text: str, file: str = "f.yaml") -> tuple[FileProblem, ...]:
    with pytest.raises(DesiredFileError) as info:
        parse_desired([(file, text)])
    assert info.value.problems, "DesiredFileError without problems"
    return info.value.problems


def one_problem(text: str, *, field: str, contains: str) -> FileProblem:
    found = [p for p in problems_of(text) if p.field == field and contains in p.message]
    assert found, f"no {field!r} problem containing {contains!r} in:\n" + "\n".join(
        str(p) for p in problems_of(text)
    )
    return found[0]


def load(text: str) -> DesiredFile:
    return parse_desired([("f.yaml", text)])


def with_instance(body: str) -> str:
    return MINIMAL + body


def with_node(body: str) -> str:
    head, _, tail = MINIMAL.partition("instances:\n")
    return head + body + "instances:\n" + tail


# -- the seed example ---------------------------------------------------------------


def test_the_seed_example_loads_into_the_demo_specs() -> None:
    desired = load_desired(EXAMPLE)
    cluster = desired.cluster
    assert cluster.name == "seed"
    assert cluster.etcd_endpoints == ("https://127.0.0.1:2379",)
    assert sorted(cluster.nodes) == ["node1", "node2", "node3", "node4"]
    assert len(cluster.instances) == 60
    assert desired.absent == frozenset()
    assert desired.files == (str(EXAMPLE),)
    assert len(desired.digest) == 64
    for spec in seed_instances():
        got = cluster.instances[spec.name]
        assert (got.memory_mib, got.vcpus, got.disks, got.tags) == (
            spec.memory_mib,
            spec.vcpus,
            spec.disks,
            spec.tags,
        ), spec.name
        assert got == spec
    node = cluster.nodes[NodeName("node3")]
    assert (node.address, node.drbd_address, node.port) == ("10.0.0.3", "10.1.0.3", 22)
    assert (node.memory_mib, node.disk_mib, node.cpus) == (24 * 1024, 730 * 1024, 8)
    assert node.host_memory_mib == 1024
    assert node.tags == frozenset({"rack:b"})
    assert node.fence is not None
    assert node.fence.agent == "fence_ipmilan"
    assert dict(node.fence.options) == {"lanplus": "1"}
    policy = cluster.policy
    assert policy.n_plus_one is True
    assert policy.exclusion_tag_prefixes == ("service:",)
    assert policy.failure_domain_prefixes == ()
    assert (policy.suspect_timeout_s, policy.lost_timeout_s) == (3.0, 8.0)


def test_the_digest_is_the_sha256_of_the_file() -> None:
    import hashlib

    assert load_desired(EXAMPLE).digest == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()


# -- many mistakes at once ----------------------------------------------------------

MANY_MISTAKES = """\
cluster:
  name: Bad_Name
  etcd: [ftp://x]
  policy:
    suspect_timeout: 10s
    lost_timeout: 5s
    colour: blue
nodes:
  - name: node1
    address: 10.0.0.1
    memory: 24G
    disk: 730G
    cpus: 8
    fence: {agent: fence_ipmilan, options: {password: hunter2}}
  - name: node1
    address: "10.0.0.2; rm -rf /"
    memory: -1G
    disk: 730G
    cpus: 0
    group: rack-z
  - name: node3
    address: 10.0.0.3
    memory: 24G
    disk: 730G
    cpus: eight
instances:
  - name: vm01
    memory: 64G
    disks: [20G]
    primary: node9
  - name: vm02
    disks: []
    tags: ["bad tag"]
  - name: vm01
    memory: 1G
    disks: [10G]
"""


def test_many_mistakes_are_all_reported_with_their_lines() -> None:
    problems = problems_of(MANY_MISTAKES, file="many.yaml")
    by_line: dict[int, list[FileProblem]] = {}
    for p in problems:
        by_line.setdefault(p.line, []).append(p)
    expected = {
        2: "cluster.name",
        3: "cluster.etcd[0]",
        6: "cluster.policy.lost_timeout",
        7: "cluster.policy.colour",
        14: "nodes[node1].fence.options.password",
        15: "nodes[node1].name",
        16: "nodes[node1].address",
        17: "nodes[node1].memory",
        19: "nodes[node1].cpus",
        20: "nodes[node1].group",
        21: "nodes[node3].fence",
        25: "nodes[node3].cpus",
        30: "instances[vm01].primary",
        31: "instances[vm02].memory",
        32: "instances[vm02].disks",
        33: "instances[vm02].tags[0]",
        34: "instances[vm01].name",
    }
    for line, field in expected.items():
        assert field in [p.field for p in by_line.get(line, [])], (line, field, problems)
    assert "node 'node9' is not declared; declared nodes: node1, node3" in str(by_line[30][0])
    assert problems == tuple(sorted(problems, key=lambda p: (p.file, p.line, p.column)))
    # The exact format, with columns.
    text = str(DesiredFileError(problems))
    assert "many.yaml:2:9: cluster.name: cluster name 'Bad_Name' must be lowercase" in text
    assert "many.yaml:19:11: nodes[node1].cpus: 0 is out of range: expected 1 to 4096" in text
    assert "many.yaml:34:11: instances[vm01].name: duplicate instance name 'vm01' " in text
    assert "(first declared at line 27)" in text
    assert len(text.splitlines()) == len(problems)
    # vm01 (the first) could not be placed anywhere: no node has 64G, but the nodes
    # had errors, so the size check only runs against the nodes that are valid.
    assert "hunter2" not in text


def test_file_problem_format() -> None:
    p = FileProblem(file="a.yaml", line=3, column=5, field="nodes[n1].port", message="bad")
    assert str(p) == "a.yaml:3:5: nodes[n1].port: bad"


# -- each kind of mistake -----------------------------------------------------------


def test_yaml_syntax_error_has_its_line() -> None:
    (p,) = problems_of("cluster:\n  name: test\nnodes: [\n  {name: a\n")
    assert p.field == "yaml"
    assert p.line >= 3
    assert "YAML syntax error" in p.message


def test_duplicate_key_points_at_the_second() -> None:
    (p,) = problems_of("cluster:\n  name: a\n  name: b\n")
    assert (p.line, p.column) == (3, 3)
    assert "duplicate key 'name'" in p.message


def test_unknown_key_lists_the_allowed_ones() -> None:
    p = one_problem(
        with_instance("  - name: vm02\n    memory: 1G\n    disks: [1G]\n    colour: red\n"),
        field="instances[vm02].colour",
        contains="unknown key 'colour'",
    )
    assert p.line == 23
    assert "allowed: name, memory, vcpus, disks" in p.message


def test_unknown_top_level_key() -> None:
    p = one_problem(MINIMAL + "extras: 1\n", field="extras", contains="unknown key")
    assert p.line == 20


_VM = "    memory: 1G\n    disks: [1G]\n"


@pytest.mark.parametrize(
    ("snippet", "field", "contains"),
    [
        ("    memory: [1]\n    disks: [1G]\n", "memory", "got a list"),
        ("    memory: 1G\n    disks: 10G\n", "disks", "must be a list"),
        (_VM + "    vcpus: two\n", "vcpus", "got a string"),
        (_VM + "    auto_balance: maybe\n", "auto_balance", "true or false"),
        (_VM + "    tags: dns\n", "tags", "must be a list"),
        (_VM + "    state: paused\n", "state", "running, stopped"),
        (_VM + "    nics: [{mode: nat}]\n", "nics[0].mode", "one of"),
        (_VM + "    nics: [{mac: 'zz'}]\n", "nics[0].mac", "MAC"),
        (_VM + "    nics: [{mac: '01:00:00:00:00:01'}]\n", "nics[0].mac", "multicast"),
        (_VM + "    nics: [{ip: 300.1.1.1}]\n", "nics[0].ip", "not an IPv4"),
        (_VM + "    nics: [{link: 'br0; reboot'}]\n", "nics[0].link", "nic link"),
        (_VM + "    os: 'a b'\n", "os", "must be lowercase"),
        ("    memory: 1G\n    disks: [{size: 1G, type: ssd}]\n", "disks[0].type", "unknown key"),
    ],
)
def test_wrong_types_and_values(snippet: str, field: str, contains: str) -> None:
    problems = problems_of(with_instance("  - name: vm02\n" + snippet))
    assert any(p.field == f"instances[vm02].{field}" and contains in p.message for p in problems), (
        problems
    )


def test_missing_required_fields() -> None:
    text = with_node("  - name: node3\n    memory: 8G\n    disk: 100G\n    cpus: 4\n")
    p = one_problem(text, field="nodes[node3].address", contains="required field 'address'")
    assert p.line == 16
    fence = one_problem(text, field="nodes[node3].fence", contains="fence agent missing")
    assert fence.line == 16
    one_problem(with_instance("  - memory: 1G\n"), field="instances[1].name", contains="required")
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n    fence: {}\n"),
        field="nodes[node3].fence.agent",
        contains="fence agent missing",
    )  # fmt: skip
    one_problem(
        with_instance("  - name: vm02\n"), field="instances[vm02].disks", contains="required"
    )


@pytest.mark.parametrize(
    ("value", "contains"),
    [
        ("0", "greater than zero"),
        ("-1024", "greater than zero"),
        ("-1G", "not a size"),
        ("12Q", "not a size"),
        ("1.0001M", "whole number"),
        ("1.5", "got a number"),
        ("99999999999999T", "impossibly large"),
        ("true", "got a boolean"),
    ],
)
def test_bad_sizes(value: str, contains: str) -> None:
    one_problem(
        with_instance(f"  - name: vm02\n    memory: {value}\n    disks: [1G]\n"),
        field="instances[vm02].memory",
        contains=contains,
    )


def test_sizes_in_all_units() -> None:
    desired = load(
        with_instance("  - name: vm02\n    memory: 1536\n    disks: [512M, 1.5G, {size: 2G}]\n")
    )
    spec = desired.cluster.instances[InstanceName("vm02")]
    assert spec.memory_mib == 1536
    assert [d.size_mib for d in spec.disks] == [512, 1536, 2048]
    node = load(
        with_node(
            "  - name: node3\n    address: n3.example.org\n    memory: 1T\n"
            "    disk: 2TiB\n    cpus: 64\n    fence: {agent: fence_ipmilan}\n"
        )
    )
    n3 = node.cluster.nodes[NodeName("node3")]
    assert (n3.memory_mib, n3.disk_mib) == (1024 * 1024, 2 * 1024 * 1024)


def test_impossible_sizes_are_refused() -> None:
    p = one_problem(
        with_instance("  - name: vm02\n    memory: 16G\n    disks: [10G]\n"),
        field="instances[vm02].memory",
        contains="impossible size",
    )
    assert "15G on node2" in p.message  # 16G less 1G for the host
    one_problem(
        with_instance("  - name: vm02\n    memory: 1G\n    disks: [150G, 60G]\n"),
        field="instances[vm02].disks",
        contains="impossible size: disks total 210G",
    )
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 1G\n    disk: 1G\n"
                  "    cpus: 1\n    fence: {agent: fence_x}\n"),
        field="nodes[node3].memory",
        contains="host_memory (1G) must be less than",
    )  # fmt: skip
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 4G\n    disk: 1G\n"
                  "    cpus: 2\n    host_cpus: 3\n    fence: {agent: fence_x}\n"),
        field="nodes[node3].host_cpus",
        contains="host_cpus (3) must not be more than the node's cpus (2)",
    )  # fmt: skip


def test_duplicate_names_point_at_the_second_and_mention_the_first() -> None:
    p = one_problem(
        with_instance("  - name: vm01\n    memory: 1G\n    disks: [1G]\n"),
        field="instances[vm01].name",
        contains="duplicate instance name 'vm01' (first declared at line 17)",
    )
    assert (p.line, p.column) == (20, 11)
    one_problem(
        with_node("  - name: node2\n    address: 10.0.0.9\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n    fence: {agent: fence_x}\n"),
        field="nodes[node2].name",
        contains="duplicate node name 'node2' (first declared at line 10)",
    )  # fmt: skip
    groups = "groups:\n  - name: rack-a\n  - {name: rack-a, tags: [dc:x]}\n"
    one_problem(
        MINIMAL + groups,
        field="groups[rack-a].name",
        contains="duplicate group name 'rack-a' (first declared at line 21)",
    )


def test_two_nodes_with_one_ssh_address_are_refused() -> None:
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.1\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n    fence: {agent: fence_x}\n"),
        field="nodes[node3].address",
        contains="already has SSH address 10.0.0.1:22",
    )  # fmt: skip


def test_undeclared_node_and_group() -> None:
    one_problem(
        with_instance("  - {name: vm02, memory: 1G, disks: [1G], primary: node1, secondary: x}\n"),
        field="instances[vm02].secondary",
        contains="node 'x' is not declared; declared nodes: node1, node2",
    )
    one_problem(
        with_instance("  - {name: vm02, memory: 1G, disks: [1G], primary: node1, "
                      "secondary: node1}\n"),
        field="instances[vm02].secondary",
        contains="different node than primary",
    )  # fmt: skip
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n    group: rack-q\n    fence: {agent: fence_x}\n"),
        field="nodes[node3].group",
        contains="group 'rack-q' is not declared; declared groups: default",
    )  # fmt: skip


def test_groups_pins_and_absent() -> None:
    text = (
        with_node(
            "  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n"
            "    cpus: 1\n    group: rack-a\n    fence: {agent: fence_x}\n"
        )
        + "  - {name: vm02, memory: 1G, disks: [1G], primary: node3, secondary: node1,"
        " state: stopped}\n"
        + "  - {name: vm03, state: absent}\n"
        + "groups:\n  - {name: rack-a, tags: [dc:ams]}\n"
    )
    desired = load(text)
    assert desired.cluster.nodes[NodeName("node3")].group == "rack-a"
    assert desired.cluster.groups["rack-a"].tags == frozenset({"dc:ams"})  # type: ignore[index]
    vm02 = desired.cluster.instances[InstanceName("vm02")]
    assert (vm02.primary, vm02.secondary, vm02.power) == ("node3", "node1", PowerState.STOPPED)
    assert desired.absent == frozenset({"vm03"})
    assert "vm03" not in desired.cluster.instances


def test_node_without_fence_agent() -> None:
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n"),
        field="nodes[node3].fence",
        contains="fence agent missing",
    )  # fmt: skip
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n    fence: {options: {lanplus: 1}}\n"),
        field="nodes[node3].fence.agent",
        contains="required",
    )  # fmt: skip
    one_problem(
        with_node("  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n"
                  "    cpus: 1\n    fence: {agent: 'ipmi; reboot'}\n"),
        field="nodes[node3].fence.agent",
        contains="not a fence agent name",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("snippet", "field", "contains"),
    [
        ("  - name: Node_3\n", "nodes[2].name", "must be lowercase letters"),
        ("  - name: '-rf'\n", "nodes[2].name", "must be lowercase letters"),
        ("  - name: a..b\n", "nodes[2].name", "must not contain '..'"),
        ("  - name: n3\n    address: 'a b'\n", "nodes[n3].address", "no shell characters"),
        ("  - name: n3\n    address: '$(reboot)'\n", "nodes[n3].address", "not a hostname"),
        ("  - name: n3\n    ssh_user: 'root;id'\n", "nodes[n3].ssh_user", "ssh user"),
        ("  - name: n3\n    tags: ['a b']\n", "nodes[n3].tags[0]", "tag 'a b' must be"),
        ("  - name: n3\n    tags: [-x]\n", "nodes[n3].tags[0]", "starting with a letter or digit"),
    ],
)
def test_unsafe_names_and_tags(snippet: str, field: str, contains: str) -> None:
    one_problem(with_node(snippet), field=field, contains=contains)


def test_literal_secret_options_are_refused() -> None:
    for option in ("password", "passwd", "snmp_priv_passwd", "api_key", "secret", "token"):
        text = with_node(
            "  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n    cpus: 1\n"
            f"    fence: {{agent: fence_x, options: {{{option}: s3cr3t}}}}\n"
        )
        p = one_problem(
            text, field=f"nodes[node3].fence.options.{option}", contains="looks like a secret"
        )
        assert "fencing configuration" in p.message
        assert "s3cr3t" not in str(DesiredFileError(problems_of(text)))


@pytest.mark.parametrize(
    ("fence", "contains"),
    [
        # The finding: a desired-state admin named the orchestrator's IPMI password
        # and a device address of theirs, or a program to run.
        (
            "{agent: fence_ipmilan, options: {lanplus: 1}, secrets: {password: {env: X}}}",
            "fence secrets are not part of the desired state",
        ),
        ("{agent: fence_ipmilan, options: {ip: 192.0.2.66}}", "fencing configuration"),
        ("{agent: fence_ipmilan, options: {ipport: 6230}}", "fencing configuration"),
        ("{agent: fence_ipmilan, options: {password_script: /tmp/x}}", "runs or names"),
        ("{agent: fence_ipmilan, options: {ipmitool_path: /tmp/x}}", "runs or names"),
        ("{agent: fence_ssh, options: {ssh_options: '-o ProxyCommand=x'}}", "runs or names"),
    ],
)
def test_fence_secrets_addresses_and_local_programs_are_refused(fence: str, contains: str) -> None:
    text = with_node(
        "  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n    cpus: 1\n"
        f"    fence: {fence}\n"
    )
    problems = problems_of(text)
    assert any(contains in p.message for p in problems), problems


def test_the_lab_agent_takes_its_address_from_the_file() -> None:
    text = with_node(
        "  - name: node3\n    address: 10.0.0.3\n    memory: 8G\n    disk: 1T\n    cpus: 1\n"
        "    fence: {agent: fence_corral_sim, options: {ip: 127.0.0.1, ipport: 9, plug: n3}}\n"
    )
    fence = load(text).cluster.nodes[NodeName("node3")].fence
    assert fence is not None and dict(fence.options)["ipport"] == "9"


def test_lost_timeout_must_exceed_suspect_timeout() -> None:
    text = MINIMAL.replace(
        "  name: test\n", "  name: test\n  policy: {suspect_timeout: 5s, lost_timeout: 5000ms}\n"
    )
    p = one_problem(text, field="cluster.policy.lost_timeout", contains="must be longer")
    assert p.line == 3
    one_problem(
        MINIMAL.replace("  name: test\n", "  name: test\n  policy: {suspect_timeout: 9}\n"),
        field="cluster.policy.suspect_timeout",
        contains="must be longer",
    )
    policy = load(
        MINIMAL.replace(
            "  name: test\n",
            "  name: test\n  policy: {suspect_timeout: 500ms, lost_timeout: 2m, "
            "vcpu_ratio: 2, wait_for_sync: true}\n",
        )
    ).cluster.policy
    assert (policy.suspect_timeout_s, policy.lost_timeout_s) == (0.5, 120.0)
    assert (policy.vcpu_ratio, policy.default_sync) == (2.0, True)


def test_cluster_missing_or_declared_twice() -> None:
    _, _, rest = MINIMAL.partition("nodes:\n")
    p = one_problem("nodes:\n" + rest, field="cluster", contains="missing")
    assert (p.line, p.column) == (1, 1)
    (twice,) = problems_of(MINIMAL + "cluster: {name: again}\n")
    assert (twice.line, twice.field) == (20, "yaml")
    assert "duplicate key 'cluster'" in twice.message
    one_problem("cluster: {}\n", field="cluster.name", contains="required")
    one_problem("cluster: [a]\n", field="cluster", contains="must be a mapping")
    one_problem("- a\n", field="", contains="the file must be a mapping")


def test_defaults_fill_what_entries_leave_out() -> None:
    text = """\
cluster:
  name: d
  defaults:
    node: {memory: 32G, disk: 1T, cpus: 16, host_memory: 2G, ssh_user: admin, port: 2222,
           tags: [dc:a], host_cpus: 2}
    instance: {vcpus: 2, os: debian-12, disks: [8G], nics: [{link: br1}]}
nodes:
  - {name: a, address: 10.0.0.1, fence: {agent: fence_x}}
  - {name: b, address: 10.0.0.2, port: 22, memory: 8G, fence: {agent: fence_x}}
instances:
  - {name: web, memory: 2G}
  - {name: db, memory: 4G, vcpus: 4, disks: [20G, 30G], os: none}
images:
  - {name: debian-12, source: /var/lib/corral/images/d12.raw, sha256: "%s"}
""" % ("ab" * 32)
    cluster = load(text).cluster
    a, b = cluster.nodes[NodeName("a")], cluster.nodes[NodeName("b")]
    assert (a.memory_mib, a.disk_mib, a.cpus, a.host_memory_mib) == (32768, 1 << 20, 16, 2048)
    assert (a.ssh_user, a.port, a.tags) == ("admin", 2222, frozenset({"dc:a"}))
    assert (b.memory_mib, b.port) == (8192, 22)
    assert (a.host_cpus, b.host_cpus) == (2, 2)
    web, db = cluster.instances[InstanceName("web")], cluster.instances[InstanceName("db")]
    assert (web.vcpus, web.os, web.disk_mib, web.nics[0].link) == (2, "debian-12", 8192, "br1")
    assert (db.vcpus, db.os, db.disk_mib) == (4, "none", 51200)
    assert web.image is not None and web.image.source == "/var/lib/corral/images/d12.raw"
    assert db.image is None and db.cloud_init is None


def test_etcd_endpoints_must_be_http_urls() -> None:
    for bad in ("ftp://h:1", "http://", "http://h:99999", "http://h/path", "'http://a b'", "7"):
        one_problem(
            MINIMAL.replace("  name: test\n", f"  name: test\n  etcd: [{bad}]\n"),
            field="cluster.etcd[0]",
            contains="etcd",
        )
    ok = MINIMAL.replace("  name: test\n", "  name: test\n  etcd: [https://e1:2379, http://e2]\n")
    assert load(ok).cluster.etcd_endpoints == ("https://e1:2379", "http://e2")


def test_duplicate_mac_addresses() -> None:
    nic = "nics: [{mac: 'AA:00:00:00:00:01'}]"
    text = with_instance(
        f"  - {{name: vm02, memory: 1G, disks: [1G], {nic}}}\n"
        f"  - {{name: vm03, memory: 1G, disks: [1G], {nic}}}\n"
    )
    one_problem(text, field="instances[vm03].nics[0].mac", contains="already used (line 20)")


# -- directories --------------------------------------------------------------------


def test_a_directory_of_files_merges(tmp_path: Path) -> None:
    head, _, instances = MINIMAL.partition("instances:\n")
    (tmp_path / "10-cluster.yaml").write_text(head)
    (tmp_path / "20-vms.yml").write_text("instances:\n" + instances)
    (tmp_path / "notes.txt").write_text("not yaml: [")
    desired = load_desired(tmp_path)
    assert sorted(desired.cluster.nodes) == ["node1", "node2"]
    assert list(desired.cluster.instances) == ["vm01"]
    assert desired.files == (str(tmp_path / "10-cluster.yaml"), str(tmp_path / "20-vms.yml"))
    import hashlib

    h = hashlib.sha256()
    for name in ("10-cluster.yaml", "20-vms.yml"):
        h.update(name.encode() + b"\0" + (tmp_path / name).read_bytes())
    assert desired.digest == h.hexdigest()


def test_cluster_in_two_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text("cluster:\n  name: other\n")
    with pytest.raises(DesiredFileError) as info:
        load_desired(tmp_path)
    (p,) = info.value.problems
    assert p.file == str(tmp_path / "b.yaml")
    assert (p.line, p.field) == (1, "cluster")
    assert f"first at {tmp_path / 'a.yaml'}:1" in p.message


def test_duplicates_across_files_name_the_other_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text("instances:\n  - {name: vm01, memory: 1G, disks: [1G]}\n")
    with pytest.raises(DesiredFileError) as info:
        load_desired(tmp_path)
    (p,) = info.value.problems
    assert p.file.endswith("b.yaml")
    assert p.line == 2
    assert "a.yaml:17" in p.message


def test_unreadable_paths_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(DesiredFileError) as info:
        load_desired(tmp_path / "missing.yaml")
    (p,) = info.value.problems
    assert (p.file, p.line, p.column) == (str(tmp_path / "missing.yaml"), 0, 0)
    with pytest.raises(DesiredFileError) as info:
        load_desired(tmp_path)
    (p,) = info.value.problems
    assert (p.file, p.line, p.column) == (str(tmp_path), 0, 0)
    assert "no *.yaml" in p.message
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"cluster:\n  name: caf\xe9\n")
    with pytest.raises(DesiredFileError) as info:
        load_desired(bad)
    assert info.value.problems[0].line == 2


# -- nothing but DesiredFileError, whatever the text --------------------------------


def _parses_or_reports(text: str) -> None:
    try:
        result = parse_desired([("fuzz.yaml", text)])
    except DesiredFileError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.line >= 1 and p.column >= 1, p
            assert p.file == "fuzz.yaml"
            assert "internal error" not in p.message, p
        return
    assert isinstance(result, DesiredFile)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_random_text_never_escapes(text: str) -> None:
    _parses_or_reports(text)


_LINES = EXAMPLE_TEXT.splitlines(keepends=True)
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]+|[\[\]{},:\"'#&*!|>-]")
_ODD_VALUES = st.sampled_from(
    ["", "0", "-1", "1e999", ".nan", "null", "~", "[]", "{}", "*x", "&a", "!!binary x",
     "2024-13-45", "true", "'", '"', "[", "{", "- ", ": ", "\t", "? ", "!!set {a}",
     "<<: *a", "0x1F", "1.5", "node1", "vm01", "absent", "password", "fence_x", "G"]
)  # fmt: skip


@st.composite
def _mutations(draw: st.DrawFn) -> str:
    lines = list(_LINES)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["delete", "duplicate", "replace", "token", "truncate"]))
        if not lines:
            break
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = draw(st.sampled_from(_LINES)) if draw(st.booleans()) else draw(st.text())
        elif op == "token":
            tokens = list(_TOKEN.finditer(lines[i]))
            if tokens:
                m = draw(st.sampled_from(tokens))
                value = draw(_ODD_VALUES | st.text(max_size=6))
                lines[i] = lines[i][: m.start()] + value + lines[i][m.end() :]
        else:
            text = "".join(lines)
            cut = draw(st.integers(min_value=0, max_value=len(text)))
            lines = text[:cut].splitlines(keepends=True)
    return "".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_mutations_of_the_example_never_escape(text: str) -> None:
    _parses_or_reports(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a]\n",
        "cluster: &c {name: x, policy: *c}\n",
        "nodes: &n [*n]\ncluster: {name: x}\n",
        "cluster: {name: x}\ninstances: [{name: vm1, tags: &t [*t], memory: 1G, disks: [1G]}]\n",
        "[" * 5000 + "]" * 5000,
        "cluster: {name: x}\nnodes:\n  - <<: {name: n1, address: h, memory: 2G, disk: 1G}\n"
        "    cpus: 1\n    fence: {agent: fence_x}\n",
        "cluster: {name: x}\n? [a, b]\n: 1\n",
        "cluster: {name: x, etcd: 2024-13-45}\n",
        "cluster: {name: !!binary eA==}\n",
        "cluster: !!set {a, b}\n",
        "\ufeffcluster: {name: x}\n",
        "cluster: {name: x}\n\x00",
    ],
)
def test_odd_yaml_is_reported_not_raised(text: str) -> None:
    _parses_or_reports(text)


def test_resize_example_loads() -> None:
    """deploy/examples/resize.yaml (docs/desired-state.md, in-place changes) is valid."""
    desired = load_desired(EXAMPLE.with_name("resize.yaml"))
    web1 = desired.cluster.instances[InstanceName("web1")]
    assert (web1.memory_mib, web1.vcpus) == (2048, 2)


def test_hvparams_example_loads_and_fills_as_ganeti() -> None:
    """deploy/examples/hvparams.yaml: the instance's own over the group's over the
    cluster's."""
    desired = load_desired(EXAMPLE.with_name("hvparams.yaml"))
    cluster = desired.cluster
    fast = cluster.groups[GroupName("fast")].hv
    web1 = cluster.instances[InstanceName("web1")].hv.over(fast.over(cluster.policy.hv))
    assert web1.given() == {
        "cpu_type": "host",
        "disk_cache": "none",
        "disk_aio": "native",
        "usb_mouse": "tablet",
    }
    assert cluster.instances[InstanceName("kernel1")].hv.kernel_args.startswith("root=")
    legacy = cluster.instances[InstanceName("legacy1")].hv.over(fast.over(cluster.policy.hv))
    assert legacy.nic_type == "e1000" and web1.nic_type == ""  # "": paravirtual


def test_hvparams_problems_name_line_and_key(tmp_path: Path) -> None:
    text = EXAMPLE.with_name("hvparams.yaml").read_text()
    bad = text.replace("disk_aio: native", "disk_aio: posix").replace(
        "reboot_behavior: exit", "reboot_behaviour: exit"
    )
    f = tmp_path / "hv.yaml"
    f.write_text(bad)
    with pytest.raises(DesiredFileError) as err:
        load_desired(f)
    lines = bad.splitlines()
    said = str(err.value)
    aio = next(i for i, t in enumerate(lines, 1) if "disk_aio: posix" in t)
    assert f"hv.yaml:{aio}:" in said and "'posix' is not one of: threads" in said, said
    assert "unknown key 'reboot_behaviour' in hvparams" in said, said


def test_networked_example_loads_and_gets_its_macs() -> None:
    """deploy/examples/networked.yaml: NICs on two bridges, one fixed MAC and
    address kept as written, the others given MACs under Ganeti's default prefix
    once, unique, and the same again when the file is applied a second time."""
    from orchestrator.desired.macs import cluster_with_macs

    cluster = load_desired(EXAMPLE.with_name("networked.yaml")).cluster
    web1, db1 = cluster.instances[InstanceName("web1")], cluster.instances[InstanceName("db1")]
    assert [n.link for n in web1.nics] == ["br0", "br-app"] and [n.link for n in db1.nics] == [
        "br-app"
    ]
    fixed = web1.nics[1]
    assert (fixed.mac, fixed.ip) == ("aa:00:00:10:00:01", "192.0.2.10")
    assert web1.nics[0].mac is None and db1.nics[0].mac is None

    empty = replace(cluster, instances={})
    given = cluster_with_macs(wanted=cluster, live=empty)
    macs = [n.mac or "" for spec in given.instances.values() for n in spec.nics]
    assert len(set(macs)) == 3 and all(re.fullmatch(r"aa:00:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert given.instances[InstanceName("web1")].nics[1].mac == "aa:00:00:10:00:01"
    again = cluster_with_macs(wanted=cluster, live=given)
    assert again.instances == given.instances
