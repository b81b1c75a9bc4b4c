"""htools' dynamic utilisation file (`hbal -U FILE`): one line per instance,
`name cpu mem dsk net`, separated by single spaces, each weight a number as
Haskell reads a Double. `parse_utilisation` reads it, `with_utilisation` gives
the named instances those weights, as htools' loader does.

Pure: no I/O, no logging; callers read the file.

As htools: a line with other than five fields (an empty line, two spaces in a
row) is an error; an instance the cluster does not have is skipped; a name given
twice takes its last line's weights. Without a file every instance weighs 1 in
each of the four loads.
"""

from __future__ import annotations

from dataclasses import replace

from reactors.htools.model import BCluster, Util
from reactors.htools.numbers import read_double


def parse_utilisation(text: str) -> dict[str, Util]:
    """The weights by instance name; ValueError naming the line otherwise."""
    weights: dict[str, Util] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for number, line in enumerate(lines, start=1):
        fields = line.split(" ")
        if len(fields) != 5:
            raise ValueError(f"line {number}: expected 'name cpu mem dsk net': {line!r}")
        name, *values = fields
        try:
            cpu, mem, dsk, net = (read_double(v) for v in values)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {line!r}") from None
        weights[name] = Util(cpu=cpu, mem=mem, dsk=dsk, net=net)
    return weights


def with_utilisation(cluster: BCluster, weights: dict[str, Util]) -> BCluster:
    """The cluster with each named instance's utilisation set."""
    return replace(
        cluster,
        instances=tuple(
            replace(i, util=weights[i.name]) if i.name in weights else i for i in cluster.instances
        ),
    )
