"""Codec round trips for every event type, and the fold's laws: total (never raises)
and incremental (folding a prefix then the rest equals folding the whole)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.codec import CorruptEvent, decode, encode, register_upcaster
from events.ids import EventId, GroupName, InstanceName, JobId, NodeName
from events.model import ALL_EVENT_TYPES, EVENT_TYPES, Event, NodeDeclared
from events.projection import fold
from events.specs import (
    ClusterPolicy,
    DiskSpec,
    FenceSpec,
    GroupSpec,
    HvParams,
    InstanceSpec,
    NicSpec,
    NodeSpec,
)
from events.state import ClusterState

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
for t in (NodeName, InstanceName, GroupName, JobId, EventId):
    st.register_type_strategy(t, names.map(t))  # type: ignore[arg-type]
st.register_type_strategy(float, st.floats(allow_nan=False, allow_infinity=False, width=32))
st.register_type_strategy(str, st.text(max_size=12))

# Specs as the model allows them (the codec refuses anything else on decode: see
# test_validation.py); other fields are drawn from their types.
sizes = st.integers(min_value=1, max_value=2**40)
cpus = st.integers(min_value=1, max_value=4096)
tags = st.frozensets(st.from_regex(r"\A[a-z][a-z0-9:]{0,10}\Z"), max_size=3)
seconds = st.floats(min_value=0.5, max_value=1e6, allow_nan=False, width=32)
st.register_type_strategy(
    ClusterPolicy,
    st.builds(
        lambda suspect, extra, **kw: ClusterPolicy(
            suspect_timeout_s=suspect, lost_timeout_s=suspect + extra, **kw
        ),
        suspect=seconds,
        extra=seconds,
        vcpu_ratio=seconds,
        restart_limit=st.integers(min_value=0, max_value=1000),
        restart_window_s=seconds,
        restart_backoff_s=seconds,
    ),
)
st.register_type_strategy(
    HvParams,
    st.builds(
        HvParams,
        kvm_flag=st.sampled_from(["", "enabled", "disabled"]),
        cpu_type=st.sampled_from(["", "host", "qemu64"]),
        machine_type=st.sampled_from(["", "pc", "q35"]),
        boot_order=st.sampled_from(["", "disk", "network"]),
        kernel_path=st.sampled_from(["", "/boot/vmlinuz-6.1"]),
        kernel_args=st.sampled_from(["", "console=ttyS0 quiet"]),
        initrd_path=st.sampled_from(["", "/var/lib/corral/kernels/initrd.img"]),
        disk_cache=st.sampled_from(["", "none", "writeback"]),
        disk_aio=st.sampled_from(["", "threads", "io_uring"]),
        usb_mouse=st.sampled_from(["", "tablet"]),
        reboot_behavior=st.sampled_from(["", "reboot", "exit"]),
    ),
)
st.register_type_strategy(
    FenceSpec,
    st.builds(
        FenceSpec,
        agent=st.just("fence_ipmilan"),
        options=st.lists(
            st.tuples(st.sampled_from(["ip", "plug"]), st.text("abc", max_size=5)),
            max_size=2,
            unique_by=lambda t: t[0],
        ).map(tuple),
    ),
)
st.register_type_strategy(
    NodeSpec,
    st.builds(
        NodeSpec,
        address=st.sampled_from(["10.0.0.1", "node1.example"]),
        port=st.integers(min_value=1, max_value=65535),
        replication_address=st.none() | st.just("192.168.0.2"),
        memory_mib=st.integers(min_value=2048, max_value=2**40),
        disk_mib=sizes,
        cpus=cpus,
        host_memory_mib=st.integers(min_value=1, max_value=1024),
        host_cpus=st.integers(min_value=0, max_value=1),
        tags=tags,
    ),
)
st.register_type_strategy(
    NicSpec,
    st.builds(
        NicSpec,
        mac=st.none() | st.just("aa:00:00:00:00:01"),
        link=st.just("br0"),
        mode=st.sampled_from(["bridged", "routed"]),
        ip=st.none() | st.just("10.1.2.3"),
    ),
)
st.register_type_strategy(DiskSpec, st.builds(DiskSpec, size_mib=sizes))
st.register_type_strategy(GroupSpec, st.builds(GroupSpec, tags=tags))
st.register_type_strategy(
    InstanceSpec,
    st.builds(
        InstanceSpec,
        memory_mib=sizes,
        vcpus=cpus,
        disks=st.lists(st.from_type(DiskSpec), min_size=1, max_size=3).map(tuple),
        os=st.just("debian"),
        nics=st.lists(st.from_type(NicSpec), max_size=1).map(tuple),
        tags=tags,
        primary=st.none(),
        secondary=st.none(),
    ),
)

any_event = st.one_of(*(st.builds(cls) for cls in ALL_EVENT_TYPES))


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_event_type_round_trips(data: st.DataObject) -> None:
    for cls in ALL_EVENT_TYPES:
        event = data.draw(st.builds(cls), label=cls.TYPE)
        assert decode(encode(event)) == event


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(any_event, st.booleans()), max_size=40, unique_by=lambda t: t[0].id),
    st.integers(min_value=0, max_value=40),
)
def test_fold_is_total_and_incremental(batched: list[tuple[Event, bool]], cut: int) -> None:
    # Events appended together share a revision: `same` puts an event in the
    # previous one's batch.
    numbered: list[tuple[int, Event]] = []
    revision = 0
    for event, same in batched:
        if not same or revision == 0:
            revision += 1
        numbered.append((revision, event))
    events = [e for _, e in numbered]
    whole = fold(ClusterState(), numbered)
    cut = min(cut, len(numbered))
    stepwise = fold(fold(ClusterState(), numbered[:cut]), numbered[cut:])
    assert stepwise == whole
    one_by_one = ClusterState()
    for item in numbered:
        one_by_one = fold(one_by_one, [item])
    assert one_by_one == whole
    assert whole.event_count == len(events)
    # Replaying already-folded revisions changes nothing.
    assert fold(whole, numbered) == whole


def test_corrupt_bytes_name_what_is_wrong() -> None:
    for raw, why in [
        (b"{not json", "not JSON"),
        (b'{"type": "no.such", "v": 1, "data": {}}', "unknown event type"),
        (b'{"type": "node.removed", "v": 1, "data": {}}', "node.removed"),
    ]:
        try:
            decode(raw)
        except CorruptEvent as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{raw!r} decoded")


def test_upcaster_brings_an_old_version_up_to_date() -> None:
    import json

    from events import codec

    class NodeDeclaredV2(NodeDeclared):
        VERSION = 2

    from events.specs import NodeSpec

    spec_plain = codec.to_plain(
        NodeSpec(name=NodeName("n1"), address="10.0.0.1", memory_mib=4096, disk_mib=1, cpus=1)
    )
    old = {
        "type": "node.declared",
        "v": 1,
        "id": "e1",
        "time": 1.0,
        "actor": "a",
        "reason": "",
        "causation_id": None,
        "correlation_id": None,
        "data": {"node_spec": spec_plain},  # v1 called the field node_spec
    }
    saved = dict(EVENT_TYPES)
    EVENT_TYPES["node.declared"] = NodeDeclaredV2
    try:
        register_upcaster("node.declared", 1, lambda d: {"spec": d.pop("node_spec")})
        event = decode(json.dumps(old).encode())
        assert dataclasses.asdict(event)["spec"]["name"] == spec_plain["name"]
    finally:
        EVENT_TYPES.clear()
        EVENT_TYPES.update(saved)
        codec.UPCASTERS.pop(("node.declared", 1), None)
