"""The image catalogue and cloud-init in the desired-state file (each bad entry a
problem at its line and field; `os` resolved against the catalogue), the seed
texts the orchestrator generates, and the node helper's seed image (a FAT
filesystem labelled cidata that mtools reads back, when installed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from events.ids import InstanceName
from events.specs import CloudInitSpec, DiskSpec, InstanceSpec, NicSpec
from nodehelper.seed import SEED_FILES, seed_request
from nodehelper.vfat import fat_image
from reactors.nodes.cloud_init import seed_texts
from reactors.nodes.commands import install_requests, seed_write
from reactors.plans.steps import DiskConfig
from tests.support.tools import require_tool
from tests.unit.desired.test_desired_file import MINIMAL, load, one_problem, problems_of

SHA = "0f" * 32
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"
CATALOGUE = f"""images:
  - name: deb
    source: /var/lib/corral/images/deb.qcow2
    sha256: "{SHA}"
    format: qcow2
  - {{name: net, source: "https://img.example.org/net.raw", sha256: "{SHA}"}}
"""


def file_with(instance_extra: str, catalogue: str = CATALOGUE) -> str:
    return MINIMAL.replace("    disks: [10G]\n", "    disks: [10G]\n" + instance_extra) + catalogue


def test_os_names_a_catalogue_image_and_carries_cloud_init() -> None:
    text = file_with(
        f"    os: deb\n    nics: [{{ip: 10.0.0.9}}]\n"
        f'    cloud_init:\n      ssh_keys: ["{KEY}"]\n      user_data: |\n'
        "        #cloud-config\n        packages: [nginx]\n"
    )
    spec = load(text).cluster.instances[InstanceName("vm01")]
    assert spec.image is not None and (spec.image.format, spec.image.sha256) == ("qcow2", SHA)
    assert spec.cloud_init == CloudInitSpec(
        ssh_keys=(KEY,), user_data="#cloud-config\npackages: [nginx]\n"
    )
    assert load(file_with("    os: none\n")).cluster.instances[InstanceName("vm01")].image is None


def test_bad_catalogue_entries_and_unknown_images_name_line_and_field() -> None:
    unknown = one_problem(
        file_with("    os: centos\n"), field="instances[vm01].os", contains="not an image"
    )
    assert unknown.line == 20 and "declared images: deb, net" in unknown.message
    bad = CATALOGUE.replace(f'"{SHA}"\n    format: qcow2', '"abc"\n    format: vmdk')
    one_problem(file_with("", bad), field="images[deb].sha256", contains="64 lowercase hex")
    one_problem(file_with("", bad), field="images[deb].format", contains="raw, qcow2")
    src = CATALOGUE.replace("/var/lib/corral/images/deb.qcow2", "/etc/shadow")
    one_problem(file_with("", src), field="images[deb].source", contains="neither an http")
    dup = CATALOGUE + f'  - {{name: deb, source: "http://x/y", sha256: "{SHA}"}}\n'
    one_problem(file_with("", dup), field="images[deb].name", contains="duplicate image")
    nosha = "images:\n  - {name: deb, source: /var/lib/corral/images/deb.qcow2}\n"
    one_problem(file_with("", nosha), field="images[deb].sha256", contains="cannot check")
    key = file_with('    os: deb\n    cloud_init: {ssh_keys: ["not a key"], vendor: 1}\n')
    one_problem(key, field="instances[vm01].cloud_init.ssh_keys[0]", contains="public key")
    one_problem(key, field="instances[vm01].cloud_init.vendor", contains="unknown key")
    assert len(problems_of(key)) == 2


def test_an_unquoted_number_and_a_broken_entry_say_so_once() -> None:
    numeric = CATALOGUE.replace(f'"{SHA}"\n    format', "1" * 64 + "\n    format")
    found = problems_of(file_with("    os: deb\n", numeric))
    assert [(p.field, "in quotes" in p.message) for p in found] == [("images[deb].sha256", True)]


def test_os_names_a_ganeti_os_definition_by_name_and_variant() -> None:
    defs = (
        CATALOGUE
        + "  - name: debootstrap+default\n    kind: ganeti-os\n"
        + '    parameters: {dhcp: "no", root-size: 8, swap: yes}\n'
    )
    spec = load(file_with("    os: debootstrap+default\n", defs)).cluster.instances[
        InstanceName("vm01")
    ]
    assert spec.image is not None and spec.image.ganeti_os and spec.os == "debootstrap+default"
    assert spec.image.parameters == (("dhcp", "no"), ("root-size", "8"), ("swap", "yes"))
    assert (spec.image.source, spec.image.sha256) == ("", "")
    assert spec.cloud_init is None  # no seed unless cloud_init is given
    own = load(
        file_with('    os: debootstrap+default\n    osparams: {dhcp: "yes", x: y}\n', defs)
    ).cluster.instances[InstanceName("vm01")]
    assert own.image is not None
    assert own.image.parameters == (
        ("dhcp", "yes"), ("root-size", "8"), ("swap", "yes"), ("x", "y"),
    )  # fmt: skip


def test_bad_ganeti_os_entries_name_line_and_field() -> None:
    def entry(text: str) -> str:
        return file_with("", CATALOGUE + text)

    one_problem(
        entry("  - {name: deb+x, kind: ganeti-os, sha256: abc}\n"),
        field="images[deb+x].sha256",
        contains="has no sha256",
    )
    one_problem(
        entry("  - {name: deb+x, kind: ganeti-os, parameters: {Bad Name: 1}}\n"),
        field="images[deb+x].parameters",
        contains="parameter name 'Bad Name'",
    )
    one_problem(
        entry("  - {name: deb+x, kind: ganeti-cd}\n"),
        field="images[deb+x].kind",
        contains="image, ganeti-os",
    )
    one_problem(
        entry(f'  - {{name: deb+x, source: "http://x/y", sha256: "{SHA}"}}\n'),
        field="images[deb+x].name",
        contains="add `kind: ganeti-os`",
    )
    one_problem(
        entry("  - {name: deb+Big, kind: ganeti-os}\n"),
        field="images[2].name",  # an invalid name: the entry by its index
        contains="os variant 'Big' must be lowercase",
    )
    one_problem(
        file_with("    os: deb\n    osparams: {dhcp: no}\n"),
        field="instances[vm01].osparams",
        contains="os 'deb' is not a definition",
    )
    unknown = one_problem(
        file_with("    os: debootstrap+default\n"),
        field="instances[vm01].os",
        contains="not an image or OS definition",
    )
    assert unknown.line == 20


def test_the_os_definitions_example_file_is_valid() -> None:
    root = Path(__file__).resolve().parents[3]
    text = (root / "deploy" / "examples" / "os-definitions.yaml").read_text()
    instances = load(text).cluster.instances
    web1, tools1 = instances[InstanceName("web1")], instances[InstanceName("tools1")]
    assert web1.image is not None and web1.image.parameters == (("filesystem", "ext4"),)
    assert tools1.image is not None and tools1.image.name == "debootstrap+minimal"
    assert tools1.image.parameters == (("filesystem", "ext3"),)


def test_the_example_file_is_valid() -> None:
    root = Path(__file__).resolve().parents[3]
    text = (root / "deploy" / "examples" / "os-images.yaml").read_text()
    instances = load(text).cluster.instances
    web1 = instances[InstanceName("web1")]
    assert web1.cloud_init is not None and len(web1.cloud_init.ssh_keys) == 1  # defaults'
    assert "packages: [nginx]" in web1.cloud_init.user_data
    assert instances[InstanceName("scratch1")].image is None


def _spec() -> InstanceSpec:
    return InstanceSpec(
        name=InstanceName("web"),
        memory_mib=512,
        vcpus=1,
        disks=(DiskSpec(size_mib=1024),),
        nics=(
            NicSpec(mac="aa:00:00:00:00:01", ip="10.1.2.3"),
            NicSpec(mac="aa:00:00:00:00:02"),
            NicSpec(mac="aa:00:00:00:00:03", ip="fd00::5"),
        ),
        cloud_init=CloudInitSpec(ssh_keys=(KEY,)),
    )


def test_seed_texts_are_documents_cloud_init_reads() -> None:
    texts = seed_texts(_spec(), instance_id="web-42")
    meta = YAML(typ="safe").load(texts["meta_data"])
    assert meta == {"instance-id": "web-42", "local-hostname": "web", "public-keys": [KEY]}
    net = YAML(typ="safe").load(texts["network_config"])
    assert net["version"] == 2
    assert net["ethernets"]["nic0"] == {
        "match": {"macaddress": "aa:00:00:00:00:01"},
        "set-name": "eth0",
        "addresses": ["10.1.2.3/24"],
    }
    assert net["ethernets"]["nic1"]["dhcp4"] is True
    assert net["ethernets"]["nic2"]["addresses"] == ["fd00::5/64"]
    assert texts["user_data"].startswith("#cloud-config")
    # What the orchestrator sends is what the helper accepts.
    name, files = seed_request(seed_write(_spec(), instance_id="web-42").body)
    assert name == "web" and [f for f, _ in files] == [f for _, f in SEED_FILES]


def test_install_requests_fetch_a_url_image_then_write_it() -> None:
    cfg = DiskConfig(
        resource="web-d0", index=0, size_mib=1024, minor=7, port=1, volume_group="vg", hosts=()
    )
    spec = load(file_with("    os: net\n")).cluster.instances[InstanceName("vm01")]
    fetch, write = install_requests(spec, cfg)
    assert (fetch.verb, fetch.args) == (
        "image-fetch",
        ("net", SHA, "https://img.example.org/net.raw"),
    )
    assert (write.verb, write.args) == ("image-write", ("net", SHA, "raw", "7"))
    spec = load(file_with("    os: deb\n")).cluster.instances[InstanceName("vm01")]
    (write,) = install_requests(spec, cfg)
    assert write.args == ("deb.qcow2", SHA, "qcow2", "7")


def test_seed_image_reads_back_with_mtools(tmp_path: Path) -> None:
    mtype = require_tool("mtype", "mtools")
    texts = seed_texts(_spec(), instance_id="web-42")
    image = tmp_path / "seed.img"
    image.write_bytes(
        fat_image("cidata", [(file, texts[key].encode()) for key, file in SEED_FILES])
    )
    for key, file in SEED_FILES:
        out = subprocess.run(
            [mtype, "-i", str(image), f"::{file}"], capture_output=True, check=True, timeout=30
        ).stdout
        assert out.decode() == texts[key]
    assert json.loads(texts["meta_data"])["local-hostname"] == "web"
