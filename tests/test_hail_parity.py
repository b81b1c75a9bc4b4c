"""corral's allocator against Ganeti's own (hail 3.0.2), and the incremental score
against the full one.

1. `reactors.score_delta` must give, for a new instance on any pair and for any
   secondary move, the same score as `cluster_score.score` of the changed cluster
   (within 1e-9), on seeded random clusters and on hypothesis-drawn ones.
2. For seeded random clusters (4-20 heterogeneous nodes, 0-200 existing instances,
   exclusion tags, failure domains in some, a drained node in some) and a sequence
   of allocate requests applied one after another, the same cluster is written as
   an IAllocator request, the real `hail` answers it, and `choose_pair` answers it.
   Both answers are scored by `cluster_score.score`: ours must never be worse than
   hail's (+1e-9). Where the two disagree on whether the instance fits at all, the
   cause must be one of the constraints only one side enforces, named explicitly.

Nothing here is imported by corral itself; `bench.alloc` reuses the IAllocator
writer and the cluster generator.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import InstanceName, NodeName
from events.model import PlacementKind
from events.specs import (
    ClusterPolicy,
    DesiredCluster,
    DiskSpec,
    InstanceSpec,
    NodeSpec,
    PowerState,
)
from events.state import ClusterState, Placement
from reactors.balance_model import (
    DEFAULT_SPINDLE_RATIO,
    BCluster,
    BInstance,
    from_state,
    group_uuid,
)
from reactors.cluster_score import score
from reactors.placement_bridge import _fits, choose_pair, loads
from reactors.score_delta import NewInstance, prepare, with_instance, with_secondary
from tests.conftest import require_tool
from tests.test_cluster_score import random_cluster

HAIL = "/usr/lib/ganeti/3.0/usr/lib/ganeti/iallocators/hail"
PACKAGE = "ganeti-htools-3.0"
TOLERANCE = 1e-9

# --------------------------------------------------------------------------- 1. delta


def _random_new(rng: random.Random, *, pnode: str, snode: str) -> BInstance:
    return BInstance(
        name="new.example.com",
        mem=rng.choice([128, 512, 4096, 30000]),
        dsk=rng.choice([1024, 20480, 400_000]),
        vcpus=rng.randint(1, 8),
        running=rng.random() < 0.8,
        offline=rng.random() < 0.1,
        auto_balance=rng.random() < 0.8,
        pnode=pnode,
        snode=snode,
        tags=tuple(
            sorted(rng.sample(["svc:web", "svc:db", "owner:ops", "misc"], rng.randint(0, 2)))
        ),
        spindle_use=rng.choice([0, 1, 2]),
    )


def _assert_delta_matches(cluster: BCluster, rng: random.Random, *, rounds: int) -> int:
    base = prepare(cluster)
    assert base.total == pytest.approx(score(cluster).total, abs=1e-12)
    names = [n.name for n in cluster.nodes]
    checked = 0
    for _ in range(rounds):
        p, s = rng.sample(names, 2)
        inst = _random_new(rng, pnode=p, snode=s)
        got = base.after_add(inst=NewInstance.of(inst), primary=p, secondary=s)
        want = score(with_instance(cluster, inst=inst, primary=p, secondary=s)).total
        assert abs(got - want) <= TOLERANCE, ("add", p, s, got, want)
        checked += 1
        movable = [i for i in cluster.instances if i.snode is not None]
        if not movable:
            continue
        moved = rng.choice(movable)
        targets = [n for n in names if n not in (moved.pnode, moved.snode)]
        if not targets:
            continue
        t = rng.choice(targets)
        got = base.after_move_secondary(instance=moved.name, secondary=t)
        want = score(with_secondary(cluster, instance=moved.name, secondary=t)).total
        assert abs(got - want) <= TOLERANCE, ("move", moved.name, t, got, want)
        checked += 1
    # Every pair at once gives the same figures as one at a time.
    pairs = [(a, b) for a in names[:5] for b in names[:5] if a != b]
    inst = _random_new(rng, pnode=names[0], snode=names[1])
    for got, p, s in base.pair_scores(inst=NewInstance.of(inst), pairs=pairs):
        want = score(with_instance(cluster, inst=inst, primary=p, secondary=s)).total
        assert abs(got - want) <= TOLERANCE, ("pairs", p, s, got, want)
    return checked


def test_delta_equals_full_score_on_random_clusters() -> None:
    checked = 0
    for seed in range(40):
        checked += _assert_delta_matches(random_cluster(seed=seed), random.Random(seed), rounds=25)
    assert checked > 1500


def test_delta_on_an_empty_and_a_uniform_cluster() -> None:
    # Equal nodes: every standard deviation starts at 0 and the running sums at 0.
    state = _state(nodes=_uniform_nodes(6), instances=[], policy=ClusterPolicy())
    _assert_delta_matches(from_state(state=state), random.Random(1), rounds=20)
    state = _state(nodes=_uniform_nodes(2), instances=[], policy=ClusterPolicy())
    _assert_delta_matches(from_state(state=state), random.Random(2), rounds=5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), rounds=st.integers(1, 8))
def test_delta_equals_full_score_hypothesis(seed: int, rounds: int) -> None:
    cluster = random_cluster(seed=seed)
    _assert_delta_matches(cluster, random.Random(seed ^ 0x5EED), rounds=rounds)


# --------------------------------------------------------------------------- clusters


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


# --------------------------------------------------------------------------- hail


def _ispec(**values: int) -> dict[str, int]:
    return {k.replace("_", "-"): v for k, v in values.items()}


def ipolicy(*, vcpu_ratio: float) -> dict[str, Any]:
    """An instance policy wide enough that no request here is out of spec; the
    vcpu and spindle ratios are the ones corral's model scores with."""
    std = _ispec(
        memory_size=128, cpu_count=1, disk_size=1024, disk_count=1, nic_count=1, spindle_use=1
    )
    return {
        "std": std,
        "minmax": [
            {
                "min": _ispec(
                    memory_size=128,
                    cpu_count=1,
                    disk_size=1,
                    disk_count=1,
                    nic_count=0,
                    spindle_use=0,
                ),
                "max": _ispec(
                    memory_size=1_048_576,
                    cpu_count=64,
                    disk_size=16_777_216,
                    disk_count=16,
                    nic_count=8,
                    spindle_use=12,
                ),
            }
        ],
        "vcpu-ratio": vcpu_ratio,
        "spindle-ratio": DEFAULT_SPINDLE_RATIO,
        "disk-templates": ["drbd", "plain"],
    }


def _disks(spec: InstanceSpec) -> list[dict[str, Any]]:
    return [{"size": d.size_mib, "mode": "rw", "spindles": 1} for d in spec.disks]


def _nics(spec: InstanceSpec) -> list[dict[str, Any]]:
    return [
        {"mac": n.mac, "ip": n.ip, "mode": n.mode, "link": n.link, "bridge": n.link}
        for n in spec.nics
    ] or [{"mac": None, "ip": None, "mode": "bridged", "link": "br0", "bridge": "br0"}]


def iallocator_request(
    state: ClusterState, spec: InstanceSpec, *, spindle_count: int | None = None
) -> dict[str, Any]:
    """The IAllocator allocate message Ganeti would send hail for `spec` on the
    cluster `state` describes (the same model `balance_model.from_state` builds).
    `spindle_count` overrides every node's spindles (the model's 1)."""
    cluster = from_state(state=state)
    desired = state.desired
    policy = ipolicy(vcpu_ratio=desired.policy.vcpu_ratio)
    groups = {
        g.uuid: {
            "name": g.name,
            "alloc_policy": g.alloc_policy,
            "networks": [],
            "tags": list(g.tags),
            "ipolicy": policy,
        }
        for g in cluster.groups
    }
    pri_mem: Counter[str] = Counter()
    pri_up: Counter[str] = Counter()
    for inst in cluster.instances:
        pri_mem[inst.pnode] += inst.mem
        if inst.running:
            pri_up[inst.pnode] += inst.mem
    nodes = {
        n.name: {
            "total_memory": n.t_mem,
            "reserved_memory": n.n_mem,
            "free_memory": n.f_mem,
            "i_pri_memory": pri_mem[n.name],
            "i_pri_up_memory": pri_up[n.name],
            "total_disk": n.t_dsk,
            "free_disk": n.f_dsk,
            "total_cpus": n.t_cpu,
            "reserved_cpus": n.os_cpus,
            "total_spindles": spindle_count or n.spindles,
            "free_spindles": spindle_count or n.spindles,
            "offline": n.offline,
            "drained": n.drained,
            "master_candidate": True,
            "master_capable": True,
            "vm_capable": True,
            "group": group_uuid(name=n.group),
            "tags": list(n.tags),
            "primary_ip": desired.nodes[NodeName(n.name)].address,
            "secondary_ip": desired.nodes[NodeName(n.name)].drbd_address,
            "ndparams": {
                "spindle_count": spindle_count or n.spindles,
                "exclusive_storage": False,
                "oob_program": None,
            },
        }
        for n in cluster.nodes
    }
    instances = {}
    for inst in cluster.instances:
        ispec = desired.instances[InstanceName(inst.name)]
        instances[inst.name] = _instance_doc(ispec) | {
            "admin_state": "up" if inst.running else "down",
            "nodes": [inst.pnode, inst.snode],
        }
    request = _instance_doc(spec) | {
        "type": "allocate",
        "name": spec.name,
        "required_nodes": 2,
    }
    return {
        "version": 2,
        "cluster_name": desired.name or "corral",
        "cluster_tags": list(cluster.cluster_tags),
        "enabled_hypervisors": ["kvm"],
        "ipolicy": policy,
        "nodegroups": groups,
        "nodes": nodes,
        "instances": instances,
        "request": request,
    }


def _instance_doc(spec: InstanceSpec) -> dict[str, Any]:
    return {
        "memory": spec.memory_mib,
        "vcpus": spec.vcpus,
        "disks": _disks(spec),
        "disk_space_total": spec.disk_mib,
        "disk_template": "drbd",
        "tags": sorted(spec.tags),
        "os": spec.os,
        "nics": _nics(spec),
        "spindle_use": 1,
        "hypervisor": "kvm",
        "admin_state_source": "admin",
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class HailAnswer:
    success: bool
    primary: NodeName | None = None
    secondary: NodeName | None = None
    info: str = ""


def run_hail(
    *, hail: str, message: dict[str, Any], path: Path, capacity: bool = True
) -> HailAnswer:
    """One hail run on `message`, written to `path` (hail reads a file). Without
    `capacity`, hail skips its global N+1 check (every node's primaries can fail
    over to their secondaries, memory, vCPU ratio and exclusion tags included)."""
    path.write_text(json.dumps(message))
    extra = [] if capacity else ["--no-capacity-checks"]
    done = subprocess.run(
        [hail, "--static-kvm-node-memory=0", *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    if not answer["success"]:
        return HailAnswer(success=False, info=answer["info"])
    p, s = answer["result"]
    return HailAnswer(success=True, primary=NodeName(p), secondary=NodeName(s), info=answer["info"])


def score_after(state: ClusterState, spec: InstanceSpec, p: NodeName, s: NodeName) -> float:
    return score(from_state(state=place(state, spec, p, s))).total


# --------------------------------------------------------------------------- 2. parity


@dataclass(kw_only=True)
class Tally:
    requests: int = 0
    compared: int = 0  # hail placed, we placed, hail's pair valid for us too
    ours_better: int = 0
    equal: int = 0
    hail_refused_we_placed: int = 0
    hail_refused_capacity_only: int = 0  # placed by hail --no-capacity-checks
    both_refused: int = 0
    we_refused_hail_placed: Counter[str] = field(default_factory=Counter)
    hail_pair_not_ours: Counter[str] = field(default_factory=Counter)
    hail_refusals: Counter[str] = field(default_factory=Counter)


def ours_only_cause(
    state: ClusterState, spec: InstanceSpec, p: NodeName, s: NodeName
) -> str | None:
    """None when our constraints accept (p, s); else which constraint that hail
    does not have refuses it: failure domains (hail only scores shared location
    tags), N+1 or memory counted with stopped instances' memory (hail's free
    memory leaves them out), or N+1 on a node already short of it (hail only
    refuses to make a node newly fail N+1). Anything else is 'unexplained'."""
    all_loads = loads(state, exclude=spec.name)
    why = _fits(state=state, spec=spec, p=all_loads[p], s=all_loads[s])
    if why is None:
        return None
    pl, sl = all_loads[p], all_loads[s]
    if why == "FailDomain":
        prefixes = state.desired.policy.failure_domain_prefixes
        shared = {t for t in pl.tags & sl.tags if t.startswith(prefixes)}
        return "FailDomain" if shared else f"unexplained {why}"

    def stopped(node: NodeName) -> int:
        return sum(
            spec_.memory_mib
            for name, pl_ in state.placements.items()
            if pl_.primary == node
            and (spec_ := state.desired.instances[name]).power == PowerState.STOPPED
        )

    p_free, s_free = pl.mem_free + stopped(p), sl.mem_free + stopped(s)
    if why == "FailMem":
        return "FailMem:stopped-memory" if p_free > spec.memory_mib else f"unexplained {why}"
    if why == "FailN1":
        already = pl.n1_need() > pl.mem_free or sl.n1_need() > sl.mem_free
        s_need = sl.secondary_for.get(p, 0) + spec.memory_mib
        p_ok = pl.n1_need() <= p_free - spec.memory_mib or pl.n1_need() > p_free
        s_ok = max(s_need, sl.n1_need()) <= s_free or sl.n1_need() > s_free
        if p_ok and s_ok:
            return "FailN1:already-short" if already else "FailN1:stopped-memory"
    return f"unexplained {why}"


def _hail_failure_kinds(info: str) -> list[str]:
    return [
        part.split(":")[0].strip()
        for part in info.split("failures ")[-1].split(",")
        if part.strip().startswith("Fail")
    ]


def check_sequence(*, hail: str, seed: int, requests: int, tmp: Path, tally: Tally) -> None:
    """Allocate `requests` instances one after another on cluster `seed`; each
    request goes to hail (as Ganeti runs it, and without its global capacity
    check) and to `choose_pair` on the same state; ours is then applied."""
    state = random_state(seed=seed)
    rng = random.Random(seed * 7919)
    for k in range(requests):
        spec = random_request(rng, name=f"new{k:03d}.example.com")
        tally.requests += 1
        message = iallocator_request(state, spec)
        strict = run_hail(hail=hail, message=message, path=tmp / "req.json")
        loose = run_hail(hail=hail, message=message, path=tmp / "req.json", capacity=False)
        ours = choose_pair(state=state, spec=spec)
        where = f"seed {seed} request {k} ({spec.memory_mib}M)"
        our_score: float | None = None
        if ours.primary is not None:
            assert ours.secondary is not None and ours.score is not None
            our_score = score_after(state, spec, ours.primary, ours.secondary)
            assert abs(our_score - ours.score) <= TOLERANCE, (where, our_score, ours.score)
        if not strict.success:
            tally.hail_refusals.update(_hail_failure_kinds(strict.info))
            if ours.primary is None:
                tally.both_refused += 1
            else:
                tally.hail_refused_we_placed += 1
                tally.hail_refused_capacity_only += loose.success
        for theirs in (strict, loose):
            if not theirs.success:
                continue
            assert theirs.primary is not None and theirs.secondary is not None
            cause = ours_only_cause(state, spec, theirs.primary, theirs.secondary)
            # Where hail's pair breaks one of our rules, it is one hail lacks.
            assert cause is None or not cause.startswith("unexplained"), (where, cause, theirs)
            if our_score is None:
                # We refused where hail placed: only for a constraint hail lacks.
                assert cause is not None, (where, ours.refusal, theirs)
                tally.we_refused_hail_placed[cause] += 1
                continue
            if cause is not None:
                tally.hail_pair_not_ours[cause] += 1
                continue
            their_score = score_after(state, spec, theirs.primary, theirs.secondary)
            assert our_score <= their_score + TOLERANCE, (
                where,
                (ours.primary, ours.secondary, our_score),
                (theirs.primary, theirs.secondary, their_score),
            )
            tally.compared += 1
            if our_score < their_score - TOLERANCE:
                tally.ours_better += 1
            else:
                tally.equal += 1
        if ours.primary is not None and ours.secondary is not None:
            state = place(state, spec, ours.primary, ours.secondary)


def test_never_worse_than_hail(tmp_path: Path) -> None:
    hail = require_tool(HAIL, PACKAGE)
    tally = Tally()
    for seed in range(12):
        check_sequence(hail=hail, seed=seed, requests=12, tmp=tmp_path, tally=tally)
    print(f"\nhail parity: {tally}")
    # The comparison must have happened, and mostly on pairs both sides accept.
    assert tally.compared >= tally.requests // 2, tally
    assert sum(tally.hail_pair_not_ours.values()) <= tally.compared // 4, tally


def test_hail_input_is_what_hail_reads(tmp_path: Path) -> None:
    """The message reaches hail intact: on an empty uniform cluster, hail and we
    agree on the score of the first placement (all pairs are equivalent)."""
    hail = require_tool(HAIL, PACKAGE)
    state = _state(nodes=_uniform_nodes(4), instances=[], policy=ClusterPolicy())
    spec = random_request(random.Random(0), name="first")
    theirs = run_hail(hail=hail, message=iallocator_request(state, spec), path=tmp_path / "r.json")
    assert theirs.success, theirs.info
    assert theirs.primary is not None and theirs.secondary is not None
    ours = choose_pair(state=state, spec=spec)
    assert ours.score is not None
    assert abs(score_after(state, spec, theirs.primary, theirs.secondary) - ours.score) <= TOLERANCE
    assert (ours.primary, ours.secondary) == ("node00", "node01")
    assert "Ganeti cluster score" in ours.reason


# --------------------------------------------------------------------------- 3. choices


def test_choose_pair_is_the_exhaustive_minimum() -> None:
    """Against a brute force over every pair our constraints accept, scored by a
    full re-scoring: same score, and ties go to the lowest names."""
    placed = 0
    for seed in range(6):
        state = random_state(seed=100 + seed, nodes=5 + seed, instances=10 * seed)
        spec = random_request(random.Random(seed), name="probe")
        ours = choose_pair(state=state, spec=spec)
        names = sorted(state.desired.nodes)
        all_loads = loads(state)
        valid = [
            (score_after(state, spec, p, s), p, s)
            for p in names
            for s in names
            if p != s
            and not state.desired.nodes[p].drained
            and not state.desired.nodes[s].drained
            and _fits(state=state, spec=spec, p=all_loads[p], s=all_loads[s]) is None
        ]
        if not valid:
            assert ours.primary is None and ours.refusal
            continue
        low = min(v[0] for v in valid)
        assert ours.score is not None and abs(ours.score - low) <= TOLERANCE, seed
        first = min((p, s) for v, p, s in valid if v <= low + 1e-10)
        assert (ours.primary, ours.secondary) == first, seed
        placed += 1
    assert placed >= 4


def test_choose_new_secondary_is_the_exhaustive_minimum() -> None:
    from reactors.placement_bridge import choose_new_secondary

    checked = 0
    for seed in range(8):
        state = random_state(seed=200 + seed, nodes=6, instances=30)
        if not state.placements:
            continue
        name = sorted(state.placements)[seed % len(state.placements)]
        ours = choose_new_secondary(state=state, instance=name)
        if ours.secondary is None:
            continue
        cluster = from_state(state=state)
        placement = state.placements[name]
        assert ours.secondary not in (placement.primary, placement.secondary)
        want = score(with_secondary(cluster, instance=name, secondary=ours.secondary)).total
        assert ours.score is not None and abs(ours.score - want) <= TOLERANCE
        # Every node our constraints accept (asked one by one) scores no better,
        # and the same choice comes back when asked again.
        for n in state.desired.nodes:
            alone = choose_new_secondary(state=state, instance=name, target=n)
            if alone.score is not None:
                assert alone.score >= ours.score - TOLERANCE, (name, n)
        assert choose_new_secondary(state=state, instance=name) == ours
        checked += 1
    assert checked >= 4


def test_pinned_and_refused_requests_keep_their_reasons() -> None:
    state = _state(nodes=_uniform_nodes(3), instances=[], policy=ClusterPolicy())
    huge = InstanceSpec(
        name=InstanceName("huge"), memory_mib=10**6, vcpus=1, disks=(DiskSpec(size_mib=1024),)
    )
    refused = choose_pair(state=state, spec=huge)
    assert refused.primary is None and refused.refusal is not None
    assert dict(refused.failures)["FailMem"] == 6
    pinned = replace(huge, name=InstanceName("pinned"), memory_mib=1024, primary=NodeName("node02"))
    choice = choose_pair(state=state, spec=pinned)
    assert choice.primary == "node02" and choice.secondary == "node00"


def test_anti_affinity_and_host_cpus_as_hail() -> None:
    """A primary the allocator chooses never joins one sharing an exclusion tag
    (hail: FailTags), unless the user pinned it; the host's own CPU counts in
    the vCPU ratio (hail: cpu_n)."""
    policy = ClusterPolicy(exclusion_tag_prefixes=("svc",))
    web = InstanceSpec(
        name=InstanceName("web1"),
        memory_mib=1024,
        vcpus=1,
        disks=(DiskSpec(size_mib=1024),),
        tags=frozenset({"svc:web"}),
    )
    nodes = _uniform_nodes(2)
    state = _state(nodes=nodes, instances=[(web, nodes[0].name, nodes[1].name)], policy=policy)
    second = replace(web, name=InstanceName("web2"))
    choice = choose_pair(state=state, spec=second)
    assert choice.primary == "node01"
    state = place(state, second, NodeName("node01"), NodeName("node00"))
    third = replace(web, name=InstanceName("web3"))
    refused = choose_pair(state=state, spec=third)
    assert refused.primary is None and dict(refused.failures)["FailTags"] == 2
    pinned = choose_pair(state=state, spec=replace(third, primary=NodeName("node00")))
    assert pinned.primary == "node00"

    small = [replace(n, cpus=4) for n in _uniform_nodes(2)]
    state = _state(nodes=small, instances=[], policy=ClusterPolicy(vcpu_ratio=1.0))
    three = replace(web, name=InstanceName("three"), vcpus=3, tags=frozenset())
    assert choose_pair(state=state, spec=three).primary is not None
    four = replace(three, name=InstanceName("four"), vcpus=4)
    refused = choose_pair(state=state, spec=four)
    assert refused.primary is None and dict(refused.failures)["FailCPU"] == 2


def test_a_new_secondary_only_checks_the_secondary() -> None:
    """Re-protection after failovers: the primary keeps the instance whatever
    the new secondary is, so a primary over its vCPU ratio (or memory) does not
    stop the instance getting a second copy elsewhere."""
    from reactors.placement_bridge import choose_new_secondary

    nodes = [replace(n, cpus=4) for n in _uniform_nodes(3)]
    a = InstanceSpec(
        name=InstanceName("a"), memory_mib=1024, vcpus=3, disks=(DiskSpec(size_mib=1024),)
    )
    b = replace(a, name=InstanceName("b"), vcpus=2)
    state = _state(
        nodes=nodes,
        instances=[
            (a, NodeName("node00"), NodeName("node01")),
            (b, NodeName("node00"), NodeName("node01")),
        ],
        policy=ClusterPolicy(vcpu_ratio=1.0),
    )
    # node00 runs 5 vCPUs and keeps 1 CPU: over a ratio of 1 on 4 CPUs
    choice = choose_new_secondary(state=state, instance=InstanceName("a"))
    assert choice.secondary == "node02", choice.refusal
