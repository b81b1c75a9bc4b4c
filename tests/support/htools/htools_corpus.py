"""A corpus of htools text files made by the reference tools, not by corral:
`hspace --simulate ... -S` (standard and tiered allocation, plain and diskless
instances added by further `hspace -t` runs), `hbal -S` after a partial
balance, and edits of single fields that `hinfo` itself accepts (stopped,
errored and offline instances, offline nodes, several node groups, exclusion,
location and desired-location tags, spindles and exclusive storage, forthcoming
instances, node memory and reported free memory as live KVM nodes report them,
free memory that disagrees with the instances, a `-U` utilisation file).

Each recipe is made with two seeds; the split is fixed before anything is
measured: seed 0 of every recipe is the tuning half (rules may be chosen on
it), seed 1 the held-out half (only reported). Files are generated into a cache
directory (`var/htools-corpus/` by default) named by the generator version, so
a changed generator makes new files; the same seed gives the same bytes.

Must not decide anything about corral: it only makes inputs. Every edit keeps
every other byte as htools wrote it, and every file is checked with `hinfo`.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.htools.htools_tools import HTOOLS_BIN

GENERATOR_VERSION = 1
HSPACE = f"{HTOOLS_BIN}/hspace"
HBAL = f"{HTOOLS_BIN}/hbal"
HINFO = f"{HTOOLS_BIN}/hinfo"
SEEDS = (0, 1)
HALVES = {0: "tuning", 1: "held-out"}
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "var" / "htools-corpus"

# htools' statuses whose memory counts as used on the primary (usesMemory).
_USES_MEMORY = {"running", "ERROR_up", "ERROR_nodedown", "ERROR_nodeoffline", "ERROR_wrongnode"}


@dataclass(frozen=True, slots=True)
class Shape:
    """`count` simulated nodes of disk, memory (MiB) and CPUs (hspace --simulate)."""

    count: int
    disk: int
    mem: int
    cpus: int


SMALL = (1_048_576, 65_536, 16)
BIG = (2_097_152, 131_072, 32)


def small(count: int) -> Shape:
    return Shape(count, *SMALL)


def big(count: int) -> Shape:
    return Shape(count, *BIG)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """How one corpus file is made: hspace's simulation and allocation, then the
    edits, in this order: merge groups, extra templates, empty nodes, statuses,
    auto-balance, tags, spindles, forthcoming, node memory, skew, offline
    nodes, utilisation, partial hbal."""

    name: str
    shapes: tuple[Shape, ...]
    one_group: bool = True
    alloc: str = "standard"  # which of hspace's results is kept: standard or tiered
    tiered: tuple[int, int, int] = (204_800, 16_384, 8)  # disk, mem, cpus
    standard: tuple[int, int, int] = (81_920, 4_096, 2)
    plain: int = 0
    diskless: int = 0
    empty: int = 0
    stopped: float = 0.0
    errors: bool = False
    no_auto_balance: float = 0.0
    exclusion: bool = False
    racks: int = 0
    desired: bool = False
    spindles: bool = False
    exclusive: bool = False
    forthcoming: int = 0
    live_memory: bool = False
    skew: bool = False
    offline: int = 0
    squeeze: int = 0
    utilisation: bool = False
    partial: int = 0

    @property
    def nodes(self) -> int:
        return sum(s.count for s in self.shapes) + self.empty

    def features(self) -> tuple[str, ...]:
        """What the file exercises, for the reports."""
        out = [f"hspace {self.alloc}"]
        flags: list[tuple[bool, str]] = [
            (len(self.shapes) > 1 and self.one_group, "mixed node sizes"),
            (not self.one_group and len(self.shapes) > 1, "several node groups"),
            (self.plain > 0, "plain instances"),
            (self.diskless > 0, "diskless instances"),
            (self.empty > 0, "empty nodes"),
            (self.stopped > 0, "stopped instances"),
            (self.errors, "errored and offline instances"),
            (self.no_auto_balance > 0, "auto_balance off"),
            (self.exclusion, "exclusion tags"),
            (self.racks > 0, "location tags"),
            (self.desired, "desired locations"),
            (self.spindles, "spindles"),
            (self.exclusive, "exclusive storage"),
            (self.forthcoming > 0, "forthcoming instances"),
            (self.live_memory, "node memory as reported"),
            (self.skew, "reported free memory off"),
            (not self.live_memory and not self.skew, "hspace's stale free memory"),
            (self.offline > 0, "offline nodes"),
            (self.squeeze > 0, "fails N+1 from the start"),
            (self.utilisation, "utilisation file"),
            (self.partial > 0, "partly balanced by hbal"),
        ]
        out += [name for on, name in flags if on]
        return tuple(out)


RECIPES: tuple[Recipe, ...] = (
    Recipe(name="hspace-10+2", shapes=(small(6), big(4)), standard=(40_960, 2_048, 2), empty=2),
    Recipe(
        name="tiered-16+3-stopped",
        shapes=(small(16),),
        alloc="tiered",
        tiered=(102_400, 8_192, 4),
        empty=3,
        stopped=0.08,
        live_memory=True,
    ),
    Recipe(
        name="std-24+4-stopped",
        shapes=(small(16), big(8)),
        empty=4,
        stopped=0.08,
        errors=True,
        live_memory=True,
    ),
    Recipe(
        name="std-36+4-stopped",
        shapes=(small(28), big(8)),
        empty=4,
        stopped=0.08,
        live_memory=True,
    ),
    Recipe(
        name="running-16+3",
        shapes=(small(16),),
        standard=(40_960, 2_048, 2),
        empty=3,
        live_memory=True,
    ),
    Recipe(name="running-36+4", shapes=(small(36),), empty=4, live_memory=True),
    Recipe(
        name="groups-3x8",
        shapes=(small(8), big(8), small(8)),
        one_group=False,
        exclusion=True,
        stopped=0.05,
        offline=1,
        live_memory=True,
    ),
    Recipe(
        name="racks-12+2",
        shapes=(small(12),),
        standard=(40_960, 2_048, 2),
        empty=2,
        racks=3,
        exclusion=True,
        desired=True,
        no_auto_balance=0.05,
        live_memory=True,
    ),
    Recipe(
        name="spindles-10", shapes=(small(10),), spindles=True, exclusive=True, live_memory=True
    ),
    Recipe(name="util-12+2", shapes=(small(12),), empty=2, utilisation=True, live_memory=True),
    Recipe(
        name="partial-20+4",
        shapes=(small(20),),
        empty=4,
        stopped=0.1,
        live_memory=True,
        partial=15,
    ),
    Recipe(
        name="templates-12+2", shapes=(small(12),), plain=20, diskless=10, empty=2, live_memory=True
    ),
    Recipe(name="skew-20+2", shapes=(small(14), big(6)), empty=2, stopped=0.15, skew=True),
    Recipe(
        name="forthcoming-8+1",
        shapes=(small(8),),
        standard=(40_960, 2_048, 2),
        empty=1,
        forthcoming=4,
        live_memory=True,
    ),
    Recipe(
        name="offline-16",
        shapes=(small(12), big(4)),
        offline=1,
        errors=True,
        exclusion=True,
        live_memory=True,
    ),
    Recipe(
        name="n1-unhappy-16+2",
        shapes=(small(16),),
        empty=2,
        stopped=0.1,
        live_memory=True,
        squeeze=3,
    ),
    Recipe(name="n1-unhappy-24", shapes=(small(18), big(6)), live_memory=True, squeeze=2),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CorpusFile:
    """One generated file: its recipe and seed, its half, its path and the
    utilisation file that goes with it (`-U`), if any."""

    recipe: Recipe
    seed: int
    path: Path
    utilisation: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.recipe.name}-s{self.seed}"

    @property
    def half(self) -> str:
        return HALVES[self.seed]


# --------------------------------------------------------------------- the text


@dataclass(slots=True)
class _Text:
    """An htools text file as sections of lines of fields, written back the way
    htools write it (each line ended, sections separated by one empty line)."""

    sections: list[list[list[str]]] = field(default_factory=list)

    @staticmethod
    def read(text: str) -> _Text:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        sections: list[list[list[str]]] = [[]]
        for line in lines:
            if line == "":
                sections.append([])
            else:
                sections[-1].append(line.split("|"))
        while len(sections) < 5:
            sections.append([])
        return _Text(sections)

    def write(self) -> str:
        blocks = ["".join("|".join(f) + "\n" for f in lines) for lines in self.sections]
        return "\n".join(blocks)

    @property
    def groups(self) -> list[list[str]]:
        return self.sections[0]

    @property
    def nodes(self) -> list[list[str]]:
        return self.sections[1]

    @property
    def instances(self) -> list[list[str]]:
        return self.sections[2]

    @property
    def tags(self) -> list[list[str]]:
        return self.sections[3]

    def add_cluster_tag(self, tag: str) -> None:
        self.tags.append([tag])


def _run(argv: Sequence[str], *, timeout: float = 900.0) -> str:
    done = subprocess.run(
        ["nice", "-n", "10", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _vary(spec: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    """The seed's own instance sizes around the recipe's: disk 0.6 to 1.2 times,
    memory 0.5 to 1.5 times (whole GiB), the same vCPUs."""
    disk = max(1024, int(spec[0] * rng.uniform(0.6, 1.2)) // 1024 * 1024)
    mem = max(1024, int(spec[1] * rng.uniform(0.5, 1.5)) // 1024 * 1024)
    return disk, mem, spec[2]


def _hspace(recipe: Recipe, work: Path, rng: random.Random) -> str:
    sims = [f"--simulate=p,{s.count},{s.disk},{s.mem},{s.cpus}" for s in recipe.shapes]
    t, st = _vary(recipe.tiered, rng), _vary(recipe.standard, rng)
    out = work / "alloc"
    _run(
        [
            HSPACE,
            *sims,
            "--disk-template=drbd",
            f"--tiered-alloc={t[0]},{t[1]},{t[2]}",
            f"--standard-alloc={st[0]},{st[1]},{st[2]}",
            "-S",
            str(out),
        ]
    )
    return (work / f"alloc.{recipe.alloc}").read_text()


def _add_template(text: str, work: Path, *, template: str, count: int, tag: str) -> str:
    """`count` more instances of another disk template, allocated by hspace on
    the cluster as it is (its standard allocation capped at `count` rounds)."""
    src, out = work / f"{tag}.in", work / tag
    src.write_text(text)
    _run(
        [
            HSPACE,
            "-t",
            str(src),
            f"--disk-template={template}",
            "--tiered-alloc=10240,1024,1",
            "--standard-alloc=10240,1024,1",
            "-l",
            str(count),
            "-S",
            str(out),
        ]
    )
    # hspace names its new instances new-0, new-1, ... again: the added ones
    # get names of their own (htools would read duplicates, corral refuses them).
    before = len(_Text.read(text).instances)
    t = _Text.read((work / f"{tag}.standard").read_text())
    for inst in t.instances[before:]:
        inst[0] = f"{tag}-{inst[0]}"
    return t.write()


# ------------------------------------------------------------------ the edits


def _merge_groups(t: _Text) -> None:
    first = t.groups[0][1]
    for n in t.nodes:
        n[8] = first


def _add_empty(t: _Text, rng: random.Random, count: int) -> None:
    """New nodes cloned from existing ones of the first group, holding nothing."""
    group = t.groups[0][1]
    models = [n for n in t.nodes if n[8] == group]
    for k in range(count):
        new = list(rng.choice(models))
        new[0] = f"node-new-{k + 1:02d}"
        new[3] = str(int(float(new[1])) - int(new[2]))  # all memory free
        new[5] = str(int(float(new[4])))  # all disk free
        new[7] = "N"
        if len(new) > 12:
            new[12] = new[9] if new[11] == "Y" else "0"
        t.nodes.append(new)


def _statuses(t: _Text, rng: random.Random, recipe: Recipe) -> None:
    for inst in t.instances:
        if rng.random() < recipe.stopped:
            inst[4] = "ADMIN_down"
    if recipe.errors:
        running = [i for i in t.instances if i[4] == "running"]
        picks = rng.sample(running, min(len(running), 10))
        words = ["ERROR_down", "ERROR_up", "USER_down", "ADMIN_offline", "ERROR_wrongnode"]
        for inst, word in zip(picks, words * 2, strict=False):
            inst[4] = word
    for inst in t.instances:
        if rng.random() < recipe.no_auto_balance:
            inst[5] = "N"


def _tags(t: _Text, rng: random.Random, recipe: Recipe) -> None:
    if recipe.exclusion:
        t.add_cluster_tag("htools:iextags:svc")
        for inst in t.instances:
            if rng.random() < 0.6:
                _add_tag(inst, 9, f"svc:{rng.choice(['web', 'db', 'cache', 'mail', 'dns'])}")
    if recipe.racks:
        t.add_cluster_tag("htools:nlocation:rack")
        for k, n in enumerate(t.nodes):
            _add_tag(n, 10, f"rack:r{k % recipe.racks}")
    if recipe.desired:
        t.add_cluster_tag("htools:desiredlocation:rack")
        for inst in t.instances:
            if rng.random() < 0.2:
                _add_tag(inst, 9, f"rack:r{rng.randrange(recipe.racks or 2)}")


def _add_tag(fields: list[str], col: int, tag: str) -> None:
    fields[col] = f"{fields[col]},{tag}" if fields[col] else tag


def _spindles(t: _Text, rng: random.Random, recipe: Recipe) -> None:
    """Node spindles and instance spindle use; with exclusive storage, on the
    nodes of every other index, free spindles and disk spindles too."""
    for inst in t.instances:
        inst[10] = str(rng.choice([1, 1, 2, 3]))
        if recipe.exclusive:
            inst[11] = str(rng.choice([1, 1, 2]))
    taken: dict[str, int] = {}
    for inst in t.instances:
        if inst[11] != "-" and inst[8] in ("drbd", "plain"):
            for holder in (inst[6], inst[7]):
                if holder:
                    taken[holder] = taken.get(holder, 0) + int(inst[11])
    for k, n in enumerate(t.nodes):
        n[9] = str(rng.choice([4, 6, 8, 12]))
        if recipe.exclusive and k % 2 == 0:
            n[11] = "Y"
            n[12] = str(int(n[9]) * 4 - taken.get(n[0], 0))
            n[9] = str(int(n[9]) * 4)


def _forthcoming(t: _Text, rng: random.Random, count: int) -> None:
    for inst in rng.sample(t.instances, min(count, len(t.instances))):
        inst[12] = "Y"


def _used_memory(t: _Text) -> dict[str, int]:
    used: dict[str, int] = {}
    for inst in t.instances:
        if inst[4] in _USES_MEMORY and inst[12] != "Y":
            used[inst[6]] = used.get(inst[6], 0) + int(inst[1])
    return used


def _live_memory(t: _Text, rng: random.Random) -> None:
    """Node memory and free memory as a live KVM node reports them: the host
    keeps 1 to 4 GiB, and each running instance costs 1 to 4 % more than its
    size (qemu's own memory), so the reported free memory is below the record."""
    used = _used_memory(t)
    for n in t.nodes:
        if n[1] == "?":
            continue
        n_mem = rng.choice([1024, 2048, 4096])
        i_mem = used.get(n[0], 0)
        overhead = int(i_mem * rng.uniform(0.01, 0.04))
        n[2] = str(n_mem)
        n[3] = str(int(float(n[1])) - n_mem - i_mem - overhead)


def _skew(t: _Text, rng: random.Random) -> None:
    """Reported free memory that disagrees with the instances either way: some
    nodes report less (memory used outside Ganeti), some more (KSM, ballooned
    guests)."""
    used = _used_memory(t)
    for n in t.nodes:
        recorded = int(float(n[1])) - int(n[2]) - used.get(n[0], 0)
        roll = rng.random()
        if roll < 0.3:
            n[3] = str(recorded - rng.randrange(512, 8192))
        elif roll < 0.6:
            n[3] = str(recorded + rng.randrange(512, 8192))
        else:
            n[3] = str(recorded)


def _squeeze(t: _Text, rng: random.Random, count: int) -> None:
    """`count` nodes report less free memory than they hold for N+1 (memory
    taken outside Ganeti): htools find the cluster N+1-unhappy from the start."""
    peers: dict[str, dict[str, int]] = {}
    for inst in t.instances:
        balanced = inst[5] == "Y" and inst[4] != "ADMIN_offline" and inst[12] != "Y"
        if inst[7] and balanced:
            row = peers.setdefault(inst[7], {})
            row[inst[6]] = row.get(inst[6], 0) + int(inst[1])
    holders = sorted(name for name, row in peers.items() if row)
    for name in rng.sample(holders, min(count, len(holders))):
        node = next(n for n in t.nodes if n[0] == name)
        node[3] = str(max(peers[name].values()) - rng.randrange(256, 4096))


def _offline(t: _Text, rng: random.Random, count: int) -> None:
    holding = {i[6] for i in t.instances}
    for n in rng.sample([n for n in t.nodes if n[0] in holding], count):
        n[7] = "Y"


def _utilisation(t: _Text, rng: random.Random) -> str:
    lines = []
    for inst in t.instances:
        if rng.random() < 0.9:
            w = [round(rng.uniform(0.1, 3.0), 2) for _ in range(4)]
            lines.append(f"{inst[0]} {w[0]} {w[1]} {w[2]} {w[3]}\n")
    return "".join(lines)


def _partial(text: str, work: Path, moves: int) -> str:
    src, out = work / "partial.in", work / "partial"
    src.write_text(text)
    _run([HBAL, "-t", str(src), "-l", str(moves), "-S", str(out)])
    return (work / "partial.balanced").read_text()


def _check(path: Path) -> None:
    """htools must accept the file as it is."""
    _run([HINFO, "-t", str(path)], timeout=300.0)


# ------------------------------------------------------------------ the corpus


def make(recipe: Recipe, seed: int, root: Path) -> CorpusFile:
    """Generate one file (and its utilisation file) unless it is there already."""
    folder = root / f"v{GENERATOR_VERSION}"
    path = folder / f"{recipe.name}-s{seed}.data"
    util = folder / f"{recipe.name}-s{seed}.util" if recipe.utilisation else None
    done = CorpusFile(recipe=recipe, seed=seed, path=path, utilisation=util)
    if path.exists() and (util is None or util.exists()):
        return done
    work = folder / "work" / done.name
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{recipe.name}/{seed}")
    text = _hspace(recipe, work, rng)
    if recipe.one_group:
        t = _Text.read(text)
        _merge_groups(t)
        text = t.write()
    if recipe.plain:
        text = _add_template(text, work, template="plain", count=recipe.plain, tag="plain")
    if recipe.diskless:
        text = _add_template(text, work, template="diskless", count=recipe.diskless, tag="dl")
    t = _Text.read(text)
    _add_empty(t, rng, recipe.empty)
    _statuses(t, rng, recipe)
    _tags(t, rng, recipe)
    if recipe.spindles:
        _spindles(t, rng, recipe)
    _forthcoming(t, rng, recipe.forthcoming)
    if recipe.live_memory:
        _live_memory(t, rng)
    if recipe.skew:
        _skew(t, rng)
    _offline(t, rng, recipe.offline)
    _squeeze(t, rng, recipe.squeeze)
    text = t.write()
    if recipe.partial:
        text = _partial(text, work, recipe.partial)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    _check(tmp)
    if util is not None:
        util.write_text(_utilisation(_Text.read(text), rng))
    tmp.rename(path)
    return done


def corpus(
    *, root: Path = DEFAULT_ROOT, recipes: Sequence[Recipe] = RECIPES, seeds: Sequence[int] = SEEDS
) -> list[CorpusFile]:
    """Every recipe with every seed, generated where missing."""
    return [make(r, s, root) for r in recipes for s in seeds]
