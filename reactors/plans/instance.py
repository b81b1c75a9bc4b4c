"""Level-triggered planning for one instance: from the folded ClusterState (desired
spec, placement decision, what the nodes last reported) decide the next steps whose
preconditions hold, or say why nothing can be done yet.

Pure: no I/O, no logging, no clocks (the caller passes `now`).

The safety rules of docs/architecture are enforced here, as preconditions:
1. a VM starts on its primary only when no other node may be running it: every
   other node that held it is freshly observed without it, or fenced;
2. a DRBD disk is promoted only when its own disk is UpToDate and its peer is
   Secondary, or disconnected and (last seen Secondary, or fenced);
3. data is discarded only on a node the placement says it supersedes (it was
   fenced while primary); any other split brain raises an alert and waits.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.ids import InstanceName, NodeName
from events.model import DrbdResourceObs, instance_key
from events.specs import InstanceSpec, PowerState
from events.state import ClusterState, NodeObservation, Placement
from reactors.naming import disks_by_instance
from reactors.plans.install import InstallAction, install_verdict, install_wanted, seed_id
from reactors.plans.queries import (
    CONNECTED,
    PRIMARY,
    SECONDARY,
    UP_TO_DATE,
    drbd_on,
    lv_size_on,
    node_actionable,
    node_fenced,
    node_fresh,
    nodes_running,
    vm_alive,
    vm_on,
)
from reactors.plans.seen import seen_on
from reactors.plans.steps import (
    DiskConfig,
    InstancePlan,
    Step,
    StepKind,
    bare_disk,
    disk_configs,
    effective_hv,
)

# The longest wait between two restarts of a crashed VM (see ClusterPolicy.restart_*).
RESTART_BACKOFF_MAX_S = 60.0


def _other_minor(res: DrbdResourceObs | None, cfg: DiskConfig) -> bool:
    """A resource of this name that is up under another minor is not the placed one
    (a stale observation of a pair just removed, or a leftover): never plugged,
    promoted or reused as if it were."""
    return res is not None and res.minor is not None and res.minor != cfg.minor


# --------------------------------------------------------------------------- planning


def plan_instance(*, state: ClusterState, instance: InstanceName, now: float) -> InstancePlan:
    """The next steps for one instance (present or removed)."""
    spec = state.desired.instances.get(instance)
    placement = state.placements.get(instance)
    if spec is None:
        return _plan_removal(state=state, instance=instance, now=now)
    if placement is None:
        reason = state.refusals.get(instance)
        return InstancePlan(
            instance=instance,
            waiting=(f"not placed: {reason}" if reason else "waiting for placement",),
        )
    configs = disk_configs(state=state, instance=instance, placement=placement)
    return _plan_present(state=state, spec=spec, placement=placement, configs=configs, now=now)


def _plan_present(
    *,
    state: ClusterState,
    spec: InstanceSpec,
    placement: Placement,
    configs: tuple[DiskConfig, ...],
    now: float,
) -> InstancePlan:
    """The phases, in order: stop VMs where they must not run (and do nothing else
    until they are stopped); per disk, bring each side's volume and DRBD resource up,
    then the roles (rule 2); remove old copies once the new pair is healthy; start the
    VM when every precondition holds (rule 1)."""
    running = nodes_running(state, spec.name)
    stray = _stray_vms(state=state, spec=spec, primary=placement.primary, running=running)
    if stray.steps:
        return stray
    plan = _Present(
        state=state,
        spec=spec,
        placement=placement,
        configs=configs,
        now=now,
        running=running,
        waiting=stray.waiting,
    )
    for cfg in configs:
        plan.disk_sides(cfg)
        plan.disk_roles(cfg)
    plan.old_copies()
    plan.install()
    plan.start_vm()
    return plan.result()


def _stray_vms(
    *, state: ClusterState, spec: InstanceSpec, primary: NodeName, running: list[NodeName]
) -> InstancePlan:
    """VMs where they should not be (ERROR_wrongnode / ERROR_up): stop steps for the
    nodes we can reach, waits for those we cannot."""
    steps: list[Step] = []
    waiting: list[str] = []
    want_running = spec.power == PowerState.RUNNING
    for node in running:
        if node == primary and want_running:
            continue
        if node_actionable(state, node):
            steps.append(
                Step(
                    kind=StepKind.STOP_VM,
                    node=node,
                    instance=spec.name,
                    note="not its primary" if node != primary else "desired stopped",
                )
            )
        else:
            waiting.append(f"VM may still run on unreachable {node}; waiting for it or a fence")
    return InstancePlan(instance=spec.name, steps=tuple(steps), waiting=tuple(waiting))


class _Present:
    """One plan of a placed instance being built, phase by phase."""

    def __init__(
        self,
        *,
        state: ClusterState,
        spec: InstanceSpec,
        placement: Placement,
        configs: tuple[DiskConfig, ...],
        now: float,
        running: list[NodeName],
        waiting: tuple[str, ...],
    ) -> None:
        self.state, self.spec, self.placement = state, spec, placement
        self.configs, self.now = configs, now
        self.name = spec.name
        self.p, self.s = placement.primary, placement.secondary
        self.want_running = spec.power == PowerState.RUNNING
        # The disks are Primary on p for the VM, or for an OS install (also of a
        # stopped instance: Ganeti installs at creation whatever the run state).
        self.want_primary = self.want_running or install_wanted(state, spec)
        self.running = running
        self.steps: list[Step] = []
        self.waiting: list[str] = list(waiting)  # VMs that may run where they must not
        self.alerts: list[tuple[str, str]] = []
        self.error_down = False
        self.degraded = False
        self.disks_ready = True  # every disk Primary-capable on p
        self.install_holds = False  # an OS install keeps the VM from starting
        self.p_ok = node_actionable(state, self.p)
        self.s_ok = node_actionable(state, self.s)
        self.p_obs, self.s_obs = state.observed.get(self.p), state.observed.get(self.s)
        if not self.p_ok:
            self.waiting.append(f"primary {self.p} is not reachable")
        if not self.s_ok:
            self.degraded = True
            self.waiting.append(f"secondary {self.s} is not reachable")
        self.vm = vm_on(self.p_obs, self.name) if self.p_ok else None

    def _step(self, kind: StepKind, node: NodeName, cfg: DiskConfig, note: str = "") -> None:
        self.steps.append(Step(kind=kind, node=node, instance=self.name, disk=cfg, note=note))

    # ---------------------------------------------------------------- each side

    def disk_sides(self, cfg: DiskConfig) -> None:
        for node, node_obs, ok in (
            (self.p, self.p_obs, self.p_ok),
            (self.s, self.s_obs, self.s_ok),
        ):
            if ok:
                self._disk_on(cfg, node, node_obs)

    def _disk_on(self, cfg: DiskConfig, node: NodeName, node_obs: NodeObservation | None) -> None:
        """The volume and the DRBD resource on one side: create, bring up, re-point,
        reconnect (discarding only the superseded copy, rule 3), grow."""
        p, s = self.p, self.s
        size = lv_size_on(node_obs, cfg.volume_group, cfg.resource)
        res = drbd_on(node_obs, cfg.resource)
        if _other_minor(res, cfg):
            self._wait_minor(cfg, node, res)
            return
        if size is None:
            self._step(StepKind.CREATE_DISK, node, cfg)
            return
        superseded = node == s and self.placement.superseded == s
        peer = s if node == p else p
        if res is None:
            if superseded:
                note = f"{s} was fenced while primary; its copy is superseded"
                self._step(StepKind.DRBD_DISCARD, node, cfg, note)
            else:
                self._step(StepKind.DRBD_UP, node, cfg)
            return
        if res.peers and peer not in {pe.peer for pe in res.peers}:
            self._step(StepKind.DRBD_UP, node, cfg, f"peer changed to {peer}")
            return
        link = next((pe for pe in res.peers if pe.peer == peer), None)
        if link is not None and link.connection == "StandAlone":
            self._standalone(cfg, node, superseded=superseded)
            return
        if size < cfg.size_mib and node == p and self.s_ok:
            self.steps.append(
                Step(
                    kind=StepKind.GROW_DISK,
                    node=p,
                    instance=self.name,
                    disk=cfg,
                    grow_peer=s,
                    note=f"{size}M -> {cfg.size_mib}M",
                )
            )

    def _wait_minor(self, cfg: DiskConfig, node: NodeName, res: DrbdResourceObs | None) -> None:
        minor = None if res is None else res.minor
        self.waiting.append(
            f"{cfg.resource} on {node} is up as minor {minor}, placed as {cfg.minor}: "
            "an older resource of that name (removed, or not ours); waiting for a probe"
        )
        self.disks_ready = False

    def _standalone(self, cfg: DiskConfig, node: NodeName, *, superseded: bool) -> None:
        p, s = self.p, self.s
        if superseded:
            self._step(StepKind.DRBD_DISCARD, node, cfg, "split brain on the superseded copy")
        elif node == p and _peer_standalone(self.s_obs, cfg.resource, p) and self.s_ok:
            self.alerts.append(
                (
                    f"split-brain:{cfg.resource}",
                    f"DRBD {cfg.resource} is StandAlone on {p} and {s}: possible split "
                    "brain; both copies kept, resolve by hand",
                )
            )
            self.degraded = True
        else:
            self._step(StepKind.DRBD_UP, node, cfg, "reconnect")

    # ---------------------------------------------------------------- roles

    def disk_roles(self, cfg: DiskConfig) -> None:
        """Roles, once both sides are up (or the peer is gone)."""
        p, s, name = self.p, self.s, self.name
        p_res = drbd_on(self.p_obs, cfg.resource) if self.p_ok else None
        s_res = drbd_on(self.s_obs, cfg.resource) if self.s_ok else None
        if _other_minor(p_res, cfg) or _other_minor(s_res, cfg):
            self.disks_ready = False
            return
        if s_res is not None and s_res.role == PRIMARY and not vm_alive(vm_on(self.s_obs, name)):
            self._step(StepKind.DRBD_SECONDARY, s, cfg)
            self.disks_ready = False
            return
        if p_res is None:
            self.disks_ready = False
            return
        if _disk_degraded(p_res, s) or (self.s_ok and (s_res is None or s_res.disk != UP_TO_DATE)):
            self.degraded = True
        if not self.want_primary:
            # A stopped instance's new pair still gets its initial sync (one side
            # made UpToDate, as for a running one), then goes back to Secondary.
            if _fresh_pair(p_res, s):
                self._initial_primary(cfg)
            elif p_res.role == PRIMARY and not vm_alive(vm_on(self.p_obs, name)):
                self._step(StepKind.DRBD_SECONDARY, p, cfg)
            return
        if p_res.role == PRIMARY:
            return
        self.disks_ready = False
        self._promote(cfg, p_res)

    def _initial_primary(self, cfg: DiskConfig) -> None:
        note = "new disk pair: initial sync from the primary"
        self._step(StepKind.DRBD_INITIAL_PRIMARY, self.p, cfg, note)

    def _promote(self, cfg: DiskConfig, p_res: DrbdResourceObs) -> None:
        """Safety rule 2: the primary's disk is promoted only when it is UpToDate and
        its peer is Secondary, or disconnected and (last seen Secondary, or fenced)."""
        p, s = self.p, self.s
        link = next((pe for pe in p_res.peers if pe.peer == s), None)
        if _fresh_pair(p_res, s):
            self._initial_primary(cfg)
            return
        if p_res.disk != UP_TO_DATE:
            self.waiting.append(f"{cfg.resource} on {p} is {p_res.disk}, not UpToDate")
            return
        if link is not None and link.connection == CONNECTED:
            if link.peer_role == PRIMARY:
                self.waiting.append(f"{cfg.resource} is still Primary on {s}")
                return
            self._step(StepKind.DRBD_PRIMARY, p, cfg)
            return
        # Peer disconnected: rule 2.
        fenced = node_fenced(self.state, s)
        last_peer_role = _last_role(self.s_obs, cfg.resource)
        if fenced or (self.s_ok and last_peer_role != PRIMARY) or last_peer_role == SECONDARY:
            note = "peer disconnected" + (" and fenced" if fenced else ", last seen Secondary")
            self._step(StepKind.DRBD_PRIMARY, p, cfg, note)
        else:
            self.waiting.append(
                f"{cfg.resource}: peer {s} disconnected and not proven Secondary or fenced"
            )

    # ---------------------------------------------------------------- old copies

    def old_copies(self) -> None:
        """Old copies on nodes no longer in the placement: removed once the new pair
        is healthy (never drop a copy before its replacement is UpToDate)."""
        p, s, state = self.p, self.s, self.state
        for node in sorted(seen_on(state, self.name)):
            if node in (p, s) or not node_actionable(state, node):
                continue
            leftovers = _leftover_disks(state.observed[node], self.name)
            if not leftovers:
                continue
            if all(_pair_healthy(self.p_obs, self.s_obs, cfg, p, s) for cfg in self.configs):
                for res_name in leftovers:
                    self.steps.append(
                        Step(
                            kind=StepKind.REMOVE_DISK,
                            node=node,
                            instance=self.name,
                            disk=bare_disk(res_name, state, node),
                            note="old copy; the new pair is UpToDate",
                        )
                    )
            else:
                self.waiting.append(f"old copy on {node} kept until the new pair is UpToDate")

    # ---------------------------------------------------------------- the OS

    def install(self) -> None:
        """A pending OS install (plans.install): stop the VM for a reinstall, write
        the image once the disks are Primary here, and hold the start until then."""
        if not self.p_ok:
            return
        verdict = install_verdict(
            state=self.state,
            spec=self.spec,
            vm_running=vm_alive(self.vm),
            disks_ready=self.disks_ready and self.want_primary,
        )
        if verdict.action == InstallAction.NONE:
            return
        self.install_holds = True
        if verdict.action == InstallAction.STOP:
            self.steps.append(
                Step(kind=StepKind.STOP_VM, node=self.p, instance=self.name, note=verdict.why)
            )
        elif verdict.action == InstallAction.WRITE and self.configs:
            self.steps.append(
                Step(
                    kind=StepKind.INSTALL_OS,
                    node=self.p,
                    instance=self.name,
                    disk=self.configs[0],
                    disks=tuple(self.configs),
                    # filled hvparams: a definition's script gets them as INSTANCE_HV_*
                    spec=effective_hv(state=self.state, spec=self.spec, node=self.p),
                    note=verdict.why,
                    reinstall=verdict.reinstall,
                )
            )
        elif verdict.why:
            self.waiting.append(verdict.why)

    # ---------------------------------------------------------------- the VM

    def start_vm(self) -> None:
        """Safety rule 1: start on the primary only when nothing on the primary holds
        it back, its disks are Primary-capable, and no other node may run it."""
        p, name, state = self.p, self.name, self.state
        # Work on the secondary side (a new copy being built) never holds the VM back,
        # nor does re-pointing the primary's DRBD at a new peer.
        holding = [
            st
            for st in self.steps
            if st.node == p and not (st.kind == StepKind.DRBD_UP and st.note.startswith("peer"))
        ]
        if not (self.want_running and not holding and self.p_ok and self.disks_ready):
            return
        if self.install_holds:
            return
        if vm_alive(self.vm):
            return
        blockers = _start_blockers(state=state, instance=name, primary=p, now=self.now)
        if state.desired.policy.default_sync:
            for cfg in self.configs:
                p_res = drbd_on(self.p_obs, cfg.resource)
                if p_res is not None and _disk_degraded(p_res, self.s):
                    blockers.append(f"{cfg.resource}: waiting for the initial sync")
        verdict = restart_verdict(state=state, instance=name, node=p, now=self.now)
        if verdict == "error_down":
            self.error_down = True
            pol = state.desired.policy
            message = (
                f"ERROR_down: {name} stopped running {pol.restart_limit} times on {p} within "
                f"{pol.restart_window_s:.0f}s; not restarted again until "
                f"`corral instance start {name}`"
            )
            self.waiting.append(message)
            self.alerts.append((f"error-down:{name}", message))
        elif verdict:
            self.waiting.append(verdict)
        elif blockers:
            self.waiting.extend(blockers)
        else:
            self.steps.append(
                Step(
                    kind=StepKind.START_VM,
                    node=p,
                    instance=name,
                    spec=effective_hv(state=self.state, spec=self.spec, node=p),
                    disks=self.configs,
                    seed_id=seed_id(state, self.spec),
                )
            )

    def result(self) -> InstancePlan:
        vm, spec = self.vm, self.spec
        restart_required = bool(
            vm_alive(vm)
            and vm is not None
            and vm.memory_mib
            and (vm.memory_mib != spec.memory_mib or (vm.vcpus and vm.vcpus != spec.vcpus))
        )
        converged = (
            not self.steps
            and not self.waiting
            and not self.alerts
            and not self.degraded
            and (vm_alive(vm) if self.want_running else not self.running)
        )
        return InstancePlan(
            instance=self.name,
            steps=tuple(_dedupe(self.steps)),
            waiting=tuple(self.waiting),
            alerts=tuple(self.alerts),
            converged=converged,
            restart_required=restart_required,
            degraded=self.degraded,
            error_down=self.error_down,
        )


def restart_verdict(
    *, state: ClusterState, instance: InstanceName, node: NodeName, now: float
) -> str:
    """ "" to start now, "error_down" when the restart budget on `node` is spent,
    else why to wait (the backoff after the last start)."""
    pol = state.desired.policy
    recent = [
        t
        for t, n in state.vm_starts.get(instance, ())
        if n == node and now - t < pol.restart_window_s
    ]
    if not recent:
        return ""
    if len(recent) >= pol.restart_limit:
        return "error_down"
    wait = min(pol.restart_backoff_s * 2.0 ** (len(recent) - 1), RESTART_BACKOFF_MAX_S)
    if now - recent[-1] < wait:
        return (
            f"restart {len(recent)} of {pol.restart_limit - 1} on {node} after "
            f"{wait:.0f}s backoff (last start {now - recent[-1]:.0f}s ago)"
        )
    return ""


def _start_blockers(
    *, state: ClusterState, instance: InstanceName, primary: NodeName, now: float
) -> list[str]:
    """Safety rule 1: every other node that may hold the VM is fresh and without it,
    or fenced."""
    blockers = []
    placement = state.placements.get(instance)
    suspects = set(nodes_running(state, instance))
    if placement is not None:
        suspects.add(placement.secondary)
    for seen_node in seen_on(state, instance):
        if vm_on(state.observed[seen_node], instance) is not None:
            suspects.add(seen_node)
    suspects.discard(primary)
    for node in sorted(suspects):
        if node_fenced(state, node):
            continue
        obs = state.observed.get(node)
        if node_fresh(state, node, now=now) and not vm_alive(vm_on(obs, instance)):
            continue
        if obs is None and node not in state.desired.nodes:
            continue
        blockers.append(f"cannot prove the VM is not running on {node} (not fresh, not fenced)")
    return blockers


def _plan_removal(*, state: ClusterState, instance: InstanceName, now: float) -> InstancePlan:
    """An instance removed from desired state: stop it everywhere, then remove its
    disks everywhere. Only for instances the log knew (never for unknown names: a
    wrong or empty event log must not wipe a node)."""
    if instance_key(instance) not in state.versions:
        return InstancePlan(instance=instance, converged=True)
    steps: list[Step] = []
    waiting: list[str] = []
    running = nodes_running(state, instance)
    for node in running:
        if node_actionable(state, node):
            steps.append(Step(kind=StepKind.STOP_VM, node=node, instance=instance, note="removed"))
        else:
            waiting.append(f"VM may still run on unreachable {node}")
    if steps or waiting:
        return InstancePlan(instance=instance, steps=tuple(steps), waiting=tuple(waiting))
    for node in sorted(seen_on(state, instance)):
        leftovers = _leftover_disks(state.observed[node], instance)
        if not leftovers:
            continue
        if not node_actionable(state, node):
            waiting.append(f"leftovers on unreachable {node} are removed when it returns")
            continue
        for res_name in leftovers:
            steps.append(
                Step(
                    kind=StepKind.REMOVE_DISK,
                    node=node,
                    instance=instance,
                    disk=bare_disk(res_name, state, node),
                    note="instance removed",
                )
            )
    return InstancePlan(
        instance=instance,
        steps=tuple(steps),
        waiting=tuple(waiting),
        converged=not steps and not waiting,
    )


def _leftover_disks(obs: NodeObservation, instance: str) -> list[str]:
    return list(disks_by_instance(obs).get(InstanceName(instance), ()))


def _peer_standalone(obs: NodeObservation | None, resource: str, peer: NodeName) -> bool:
    res = drbd_on(obs, resource)
    if res is None:
        return False
    link = next((pe for pe in res.peers if pe.peer == peer), None)
    return link is not None and link.connection == "StandAlone"


def _last_role(obs: NodeObservation | None, resource: str) -> str | None:
    res = drbd_on(obs, resource)
    return res.role if res else None


def _fresh_pair(res: DrbdResourceObs, peer: NodeName) -> bool:
    """A pair just created: both sides Inconsistent and connected (no data yet)."""
    link = next((pe for pe in res.peers if pe.peer == peer), None)
    return (
        res.disk == "Inconsistent"
        and link is not None
        and link.connection == CONNECTED
        and link.peer_disk == "Inconsistent"
    )


def _disk_degraded(res: DrbdResourceObs, peer: NodeName) -> bool:
    if res.disk != UP_TO_DATE:
        return True
    link = next((pe for pe in res.peers if pe.peer == peer), None)
    return link is None or link.connection != CONNECTED or link.peer_disk != UP_TO_DATE


def _pair_healthy(
    p_obs: NodeObservation | None,
    s_obs: NodeObservation | None,
    cfg: DiskConfig,
    p: NodeName,
    s: NodeName,
) -> bool:
    p_res, s_res = drbd_on(p_obs, cfg.resource), drbd_on(s_obs, cfg.resource)
    return (
        p_res is not None
        and s_res is not None
        and not _disk_degraded(p_res, s)
        and not _disk_degraded(s_res, p)
    )


def _dedupe(steps: Iterable[Step]) -> list[Step]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for step in steps:
        key = (step.kind.value, step.node, step.disk.resource if step.disk else "")
        if key in seen:
            continue
        seen.add(key)
        out.append(step)
    return out
