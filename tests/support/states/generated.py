"""Generated clusters for tests and benches: htools-model clusters from a seed
(`generated_cluster`, `random_cluster`, `generated`), folded states with
instances placed (`random_state`, `place`), and a plan's result written back
onto its start (`with_placement`). Pure; must not run tools or touch etcd.
"""

from __future__ import annotations

import random
from dataclasses import replace

from devtools.demo import seed_instances
from events.ids import EventId, InstanceName, NodeName
from events.model import (
    DiskPlacement,
    Event,
    InstanceDeclared,
    InstancePlaced,
    NodeDeclared,
    PlacementKind,
    PolicySet,
)
from events.projection import fold, fold_all
from events.specs import (
    ClusterPolicy,
    DesiredCluster,
    DiskSpec,
    InstanceSpec,
    NodeSpec,
    PowerState,
)
from events.state import ClusterState, Placement
from reactors.htools.model import (
    EXCLUSION_TAG_PREFIX,
    LOCATION_TAG_PREFIX,
    BCluster,
    BGroup,
    BInstance,
    BNode,
    BPolicy,
    group_uuid,
)
from reactors.placement.allocator import _fits, choose_pair
from reactors.placement.node_loads import loads


def generated(nodes: int, count: int, *, seed: int = 1, big_share: float = 0.25) -> ClusterState:
    """`nodes` seed-sized nodes (some bigger), `count` seed-mix instances placed by
    corral's allocator one after another."""
    rnd = random.Random(seed)
    events: list[tuple[int, Event]] = [
        (
            1,
            PolicySet(
                id=EventId("policy"),
                time=0.0,
                actor="test",
                cluster_name="gen",
                policy=ClusterPolicy(exclusion_tag_prefixes=("service:",)),
            ),
        )
    ]
    for i in range(nodes):
        big = rnd.random() < big_share
        events.append(
            (
                1,
                NodeDeclared(
                    id=EventId(f"node{i}"),
                    time=0.0,
                    actor="test",
                    spec=NodeSpec(
                        name=NodeName(f"node{i + 1}"),
                        address=f"10.0.0.{i + 1}",
                        memory_mib=(48 if big else 24) * 1024,
                        disk_mib=(1460 if big else 730) * 1024,
                        cpus=16 if big else 8,
                        host_memory_mib=1024,
                    ),
                ),
            )
        )
    state = fold_all(events)
    mix = seed_instances()
    for k in range(count):
        spec = replace(mix[k % len(mix)], name=InstanceName(f"vm{k:04d}"))
        choice = choose_pair(state=state, spec=spec)
        if choice.primary is None or choice.secondary is None:
            break
        state = fold(
            state,
            [
                (
                    k + 2,
                    InstanceDeclared(id=EventId(f"d{k}"), time=0.0, actor="test", spec=spec),
                ),
                (
                    k + 2,
                    InstancePlaced(
                        id=EventId(f"p{k}"),
                        time=0.0,
                        actor="test",
                        instance=spec.name,
                        primary=choice.primary,
                        secondary=choice.secondary,
                        disks=(
                            DiskPlacement(index=0, size_mib=spec.disk_mib, minor=k, port=11000 + k),
                        ),
                        kind=PlacementKind.INITIAL,
                    ),
                ),
            ],
        )
    return state


def _uniform_nodes(count: int) -> list[NodeSpec]:
    return [
        NodeSpec(
            name=NodeName(f"node{i:02d}"),
            address=f"10.0.0.{i + 1}",
            memory_mib=32768,
            disk_mib=1_000_000,
            cpus=16,
        )
        for i in range(count)
    ]


def _state(
    *,
    nodes: list[NodeSpec],
    instances: list[tuple[InstanceSpec, NodeName, NodeName]],
    policy: ClusterPolicy,
) -> ClusterState:
    return ClusterState(
        desired=DesiredCluster(
            name="parity",
            policy=policy,
            nodes={n.name: n for n in nodes},
            instances={i.name: i for i, _, _ in instances},
        ),
        placements={i.name: _placement(p, s) for i, p, s in instances},
    )


def _placement(p: NodeName, s: NodeName) -> Placement:
    return Placement(primary=p, secondary=s, disks=(), kind=PlacementKind.INITIAL, revision=0)


def place(state: ClusterState, spec: InstanceSpec, p: NodeName, s: NodeName) -> ClusterState:
    """`state` with `spec` declared and placed on (p, s)."""
    return replace(
        state,
        desired=replace(state.desired, instances={**state.desired.instances, spec.name: spec}),
        placements={**state.placements, spec.name: _placement(p, s)},
    )


def random_request(rng: random.Random, *, name: str) -> InstanceSpec:
    tags: set[str] = set()
    if rng.random() < 0.5:
        tags.add(f"svc:{rng.choice(['web', 'db', 'cache', 'mail'])}")
    if rng.random() < 0.2:
        tags.add(f"owner:{rng.choice(['ops', 'dev'])}")
    return InstanceSpec(
        name=InstanceName(name),
        memory_mib=rng.choice([512, 1024, 2048, 4096, 8192]),
        vcpus=rng.randint(1, 4),
        disks=tuple(
            DiskSpec(size_mib=rng.choice([5120, 10240, 20480, 51200]))
            for _ in range(rng.choice([1, 1, 1, 2]))
        ),
        tags=frozenset(tags),
    )


def random_state(
    *, seed: int, nodes: int | None = None, instances: int | None = None
) -> ClusterState:
    """Heterogeneous nodes; existing instances placed where our constraints allow
    (random pairs, so the cluster starts unbalanced); exclusion tags always,
    failure domains in a third of the clusters, a drained node in a quarter."""
    rng = random.Random(seed)
    n_nodes = nodes if nodes is not None else rng.randint(4, 20)
    domains = rng.random() < 0.34
    specs = [
        NodeSpec(
            name=NodeName(f"node{i:02d}.example.com"),
            address=f"10.0.{i // 200}.{i % 200 + 1}",
            memory_mib=rng.choice([32768, 65536, 131072]),
            host_memory_mib=rng.choice([1024, 2048]),
            disk_mib=rng.choice([1_000_000, 2_000_000, 4_000_000]),
            cpus=rng.choice([16, 32, 64]),
            tags=frozenset({f"rack:r{i % 3}"}) if domains else frozenset(),
        )
        for i in range(n_nodes)
    ]
    if rng.random() < 0.25:
        k = rng.randrange(n_nodes)
        specs[k] = replace(specs[k], drained=True)
    policy = ClusterPolicy(
        vcpu_ratio=rng.choice([4.0, 8.0]),
        exclusion_tag_prefixes=("svc:",),
        failure_domain_prefixes=("rack:",) if domains else (),
    )
    state = _state(nodes=specs, instances=[], policy=policy)
    # Drained nodes may still hold instances placed before they were drained.
    names = [s.name for s in specs]
    count = instances if instances is not None else rng.randint(0, min(200, 12 * n_nodes))
    for j in range(count):
        spec = random_request(rng, name=f"old{j:04d}.example.com")
        if rng.random() < 0.1:
            spec = replace(spec, power=PowerState.STOPPED)
        relaxed = replace(state.desired, policy=replace(policy, failure_domain_prefixes=()))
        view = replace(state, desired=relaxed)
        all_loads = loads(view)
        for _ in range(20):
            p, s = rng.sample(names, 2)
            if _fits(state=view, spec=spec, p=all_loads[p], s=all_loads[s]) is None:
                state = place(state, spec, p, s)
                break
    return state


def random_cluster(*, seed: int) -> BCluster:
    rng = random.Random(seed)
    n_nodes = rng.randint(4, 20)
    n_instances = rng.randint(10, 200)
    with_locations = rng.random() < 0.5
    nodes: list[BNode] = []
    for i in range(n_nodes):
        nodes.append(
            BNode(
                name=f"node{i:02d}.example.com",
                t_mem=rng.choice([16384, 32768, 65536, 131072]),
                n_mem=rng.choice([1024, 2048, 4096]),
                f_mem=0,  # filled in below
                t_dsk=rng.choice([200_000, 500_000, 1_000_000, 2_000_000]),
                f_dsk=0,
                t_cpu=rng.choice([8, 16, 32, 64]),
                group="default",
                tags=(f"rack:r{rng.randint(1, 3)}",) if with_locations else (),
                spindles=rng.choice([1, 1, 2, 4]),
                os_cpus=rng.choice([1, 1, 2]),
                cpu_speed=rng.choice([1.0, 1.0, 1.5]),
            )
        )
    # One node drained in some clusters, one offline in others.
    if rng.random() < 0.5:
        k = rng.randrange(n_nodes)
        nodes[k] = replace(nodes[k], drained=True)
    if rng.random() < 0.25:
        k = rng.randrange(n_nodes)
        nodes[k] = replace(nodes[k], offline=True)
    names = [n.name for n in nodes]
    # Half the clusters are placed with care (primaries only where memory is left,
    # on usable nodes), the other half anywhere: both low and high scores get checked.
    careful = seed % 2 == 0
    room = {n.name: n.t_mem - n.n_mem for n in nodes}
    usable = [n.name for n in nodes if not (n.offline or n.drained)]
    instances: list[BInstance] = []
    for j in range(n_instances):
        mem = rng.choice([512, 1024, 2048, 4096, 8192])
        fitting = [n for n in usable if room[n] >= mem]
        if careful and len(fitting) >= 2:
            pnode = rng.choice(fitting)
            snode = rng.choice([n for n in usable if n != pnode])
        else:
            pnode, snode = rng.sample(names, 2)
        tags: list[str] = []
        if rng.random() < 0.5:
            tags.append(f"svc:{rng.choice(['web', 'db', 'cache', 'mail'])}")
        if rng.random() < 0.2:
            tags.append(f"owner:{rng.choice(['ops', 'dev'])}")
        offline = rng.random() < 0.04
        running = not offline and rng.random() < 0.85
        if running:
            room[pnode] -= mem
        instances.append(
            BInstance(
                name=f"inst{j:03d}.example.com",
                mem=mem,
                dsk=rng.choice([5120, 10240, 20480, 51200]),
                vcpus=rng.randint(1, 8),
                status="ADMIN_offline" if offline else ("running" if running else "ADMIN_down"),
                auto_balance=rng.random() < 0.9,
                pnode=pnode,
                snode=snode,
                tags=tuple(tags),
                spindle_use=rng.choice([1, 1, 2]),
            )
        )
    mem_used = {n: 0 for n in names}
    dsk_used = {n: 0 for n in names}
    for inst in instances:
        if inst.running:
            mem_used[inst.pnode] += inst.mem
        dsk_used[inst.pnode] += inst.dsk
        if inst.snode is not None:
            dsk_used[inst.snode] += inst.dsk
    nodes = [
        replace(
            n,
            f_mem=int(n.t_mem) - n.n_mem - mem_used[n.name],
            f_dsk=int(n.t_dsk) - dsk_used[n.name],
        )
        for n in nodes
    ]
    policy = BPolicy(vcpu_ratio=rng.choice([4.0, 8.0]), spindle_ratio=rng.choice([16.0, 32.0]))
    ctags = [EXCLUSION_TAG_PREFIX + "svc"]
    if with_locations:
        ctags.append(LOCATION_TAG_PREFIX + "rack")
    return BCluster(
        nodes=tuple(nodes),
        instances=tuple(instances),
        groups=(
            BGroup(
                name="default",
                uuid=group_uuid(name="default"),
                policy=policy if rng.random() < 0.7 else None,
            ),
        ),
        cluster_tags=tuple(ctags),
        policy=policy,
    )


def generated_cluster(
    *,
    seed: int,
    full: int,
    empty: int,
    instances: int,
    drained: bool = False,
    spindles: int = 4,
    memory: tuple[int, ...] = (512, 1024, 2048, 2048, 4096, 8192),
) -> BCluster:
    """`full` heterogeneous nodes holding `instances` instances, placed unevenly
    (primaries favour the first nodes) but within memory, disk, vCPU ratio and
    N+1 as corral places them; then `empty` new nodes; optionally the second node
    drained. Instances carry `svc:*` exclusion tags. All running and
    auto-balanced (htools' and corral's memory rules then agree)."""
    rng = random.Random(seed)
    nodes: list[BNode] = []
    for k in range(full + empty):
        big = rng.random() < 0.3
        nodes.append(
            BNode(
                name=f"node{k + 1:02d}",
                t_mem=(128 if big else 64) * 1024,
                n_mem=2048,
                f_mem=0,
                t_dsk=(4 if big else 2) * 1024 * 1024,
                f_dsk=0,
                t_cpu=32 if big else 16,
                spindles=spindles,
            )
        )
    if drained:
        nodes[1] = replace(nodes[1], drained=True)
    vcpu_ratio = 4.0
    free = {n.name: int(n.t_mem) - n.n_mem for n in nodes}
    disk = {n.name: int(n.t_dsk) for n in nodes}
    vcpus = {n.name: 0 for n in nodes}
    peers: dict[str, dict[str, int]] = {n.name: {} for n in nodes}
    holders = [n.name for n in nodes[:full]]
    weights = [1.0 / (1 + k * 0.35) for k in range(full)]
    placed: list[BInstance] = []
    attempts = 0
    while len(placed) < instances and attempts < instances * 50:
        attempts += 1
        mem = rng.choice(memory)
        dsk = rng.choice([10240, 20480, 40960, 81920])
        cpus = rng.randint(1, 4)
        p = rng.choices(holders, weights=weights)[0]
        s = rng.choice([h for h in holders if h != p])
        need_s = max(max(peers[s].values(), default=0), peers[s].get(p, 0) + mem)
        node_p = next(n for n in nodes if n.name == p)
        if (
            free[p] - mem < max(peers[p].values(), default=0)
            or need_s > free[s]
            or disk[p] < dsk
            or disk[s] < dsk
            or vcpus[p] + cpus > node_p.t_cpu * vcpu_ratio
        ):
            continue
        free[p] -= mem
        disk[p] -= dsk
        disk[s] -= dsk
        vcpus[p] += cpus
        peers[s][p] = peers[s].get(p, 0) + mem
        tags = (f"svc:{rng.choice(['web', 'db', 'cache', 'mail', 'dns'])}",)
        placed.append(
            BInstance(
                name=f"vm{len(placed):04d}",
                mem=mem,
                dsk=dsk,
                vcpus=cpus,
                pnode=p,
                snode=s,
                tags=tags if rng.random() < 0.6 else (),
            )
        )
    nodes = [replace(n, f_mem=free[n.name], f_dsk=disk[n.name]) for n in nodes]
    policy = BPolicy(vcpu_ratio=vcpu_ratio)
    return BCluster(
        nodes=tuple(nodes),
        instances=tuple(placed),
        groups=(BGroup(name="default", uuid=group_uuid(name="default"), policy=policy),),
        cluster_tags=(EXCLUSION_TAG_PREFIX + "svc",),
        policy=policy,
    )


def with_placement(start: BCluster, placed: BCluster) -> BCluster:
    """`start` with every instance where `placed` has it, free memory and disk
    recomputed from the instances."""
    where = {i.name: (i.pnode, i.snode) for i in placed.instances}
    instances = tuple(
        replace(i, pnode=where[i.name][0], snode=where[i.name][1]) for i in start.instances
    )
    mem = {n.name: 0 for n in start.nodes}
    dsk = {n.name: 0 for n in start.nodes}
    before_mem = {n.name: 0 for n in start.nodes}
    before_dsk = {n.name: 0 for n in start.nodes}
    for old, new in zip(start.instances, instances, strict=True):
        if old.running:
            before_mem[old.pnode] += old.mem
            mem[new.pnode] += new.mem
        for holder in (old.pnode, old.snode):
            if holder is not None:
                before_dsk[holder] += old.dsk
        for holder in (new.pnode, new.snode):
            if holder is not None:
                dsk[holder] += new.dsk
    nodes = tuple(
        replace(
            n,
            f_mem=n.f_mem + before_mem[n.name] - mem[n.name],
            f_dsk=n.f_dsk + before_dsk[n.name] - dsk[n.name],
        )
        for n in start.nodes
    )
    return replace(start, nodes=nodes, instances=instances)
