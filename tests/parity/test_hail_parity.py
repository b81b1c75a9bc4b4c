"""corral's allocator against Ganeti's own (hail 3.0.2), and the incremental score
against the full one.

1. `reactors.placement.score_delta` must give, for a new instance on any pair and for any
   secondary move, the same score as `reactors.htools.score.score` of the changed cluster
   (within 1e-9), on seeded random clusters and on hypothesis-drawn ones.
2. For seeded random clusters (4-20 heterogeneous nodes, 0-200 existing instances,
   exclusion tags, failure domains in some, a drained node in some) and a sequence
   of allocate requests applied one after another, the same cluster is written as
   an IAllocator request, the real `hail` answers it, and `choose_pair` answers it.
   Both answers are scored by `reactors.htools.score.score`: ours must never be worse than
   hail's (+1e-9). Where the two disagree on whether the instance fits at all, the
   cause must be one of the constraints only one side enforces, named explicitly.

Nothing here is imported by corral itself; `bench.htools.alloc` reuses the IAllocator
writer and the cluster generator.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import InstanceName, NodeName
from events.specs import (
    ClusterPolicy,
    DiskSpec,
    InstanceSpec,
    PowerState,
)
from events.state import ClusterState
from reactors.htools.model import (
    BCluster,
    BInstance,
    from_state,
)
from reactors.htools.score import score
from reactors.placement.allocator import _fits, choose_pair
from reactors.placement.node_loads import loads
from reactors.placement.score_delta import NewInstance, prepare, with_instance, with_secondary
from tests.support.htools.htools_tools import HAIL, iallocator_request, run_hail
from tests.support.states.generated import (
    _state,
    _uniform_nodes,
    place,
    random_cluster,
    random_request,
    random_state,
)
from tests.support.tools import require_tool

PACKAGE = "ganeti-htools-3.0"
TOLERANCE = 1e-9

# --------------------------------------------------------------------------- 1. delta


def _status(rng: random.Random) -> str:
    running, offline = rng.random() < 0.8, rng.random() < 0.1
    return "ADMIN_offline" if offline else ("running" if running else "ADMIN_down")


def _random_new(rng: random.Random, *, pnode: str, snode: str) -> BInstance:
    return BInstance(
        name="new.example.com",
        mem=rng.choice([128, 512, 4096, 30000]),
        dsk=rng.choice([1024, 20480, 400_000]),
        vcpus=rng.randint(1, 8),
        status=_status(rng),
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


# --------------------------------------------------------------------------- hail


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
    from reactors.placement.allocator import choose_new_secondary

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
    from reactors.placement.allocator import choose_new_secondary

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
