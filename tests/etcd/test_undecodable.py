"""An event that reaches etcd without corral's checks (written by hand, by an old or
broken writer, or by someone with etcd credentials) and breaks a field rule: every
reader sees it as an alert, nothing of it is applied, and the object it names is not
left stuck (the fold counts its version as etcd does, so the next write with an
expected version goes through)."""

from __future__ import annotations

from devtools.local_etcd import LocalEtcd
from events.codec import encode
from events.ids import EventId, InstanceName
from events.model import InstanceDeclared, InstanceRemoved
from events.projection import fold
from events.specs import DiskSpec, InstanceSpec, NicSpec
from events.state import ClusterState
from events.store import EventStore


async def test_a_bad_event_in_etcd_is_an_alert_not_a_stuck_object(etcd: LocalEtcd) -> None:
    async with EventStore.connect([etcd.endpoint], "c1", credentials=etcd.credentials()) as store:
        spec = InstanceSpec(
            name=InstanceName("vm2"),
            memory_mib=512,
            vcpus=1,
            disks=(DiskSpec(size_mib=1024),),
            nics=(NicSpec(ip={"x": 1}),),  # type: ignore[arg-type]
        )
        bad = InstanceDeclared(id=EventId("bad1"), time=1.0, actor="someone", spec=spec)
        # What an append does, without corral's checks: the event key and the
        # object's version key in one transaction.
        tx = store.client.transactions
        await store.client.transaction(
            compare=[],
            success=[
                tx.put(store.event_key("bad1"), b"0\n" + encode(bad)),
                tx.put(store.version_key("instance/vm2"), b"bad1"),
            ],
            failure=[],
        )
        state = fold(ClusterState(), [x async for x in store.read_all()])
        assert "vm2" not in state.desired.instances
        alerts = [a for a in state.alerts.values() if a.subject == "instance/vm2"]
        assert len(alerts) == 1 and alerts[0].severity == "critical"
        assert "instance.declared" in alerts[0].message and "nics[0].ip" in alerts[0].message
        # Not stuck: a write that expects the version the fold shows is accepted.
        removed = InstanceRemoved(
            id=EventId("fix1"), time=2.0, actor="ops", instance=InstanceName("vm2")
        )
        await store.append([removed], expected={"instance/vm2": state.versions["instance/vm2"]})
        # And a subscriber sees the same alert as a reader.
        async for revision, event in store.subscribe(1):
            assert revision and event.TYPE == "event.undecodable"
            break
