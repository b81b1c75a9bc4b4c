"""The node figures the search bounds and scores many candidates with, as arrays:
per node its free disk and memory, reserved memory, corral's free memory, vCPUs,
spindle use, copies held and scored values, and what each node reserves for each
N+1 peer (`NodeArrays`). Kept from step to step and refreshed only for the nodes a
move changed (`Work.version`).

Pure: no I/O, no logging, no asyncio; a read-only mirror of `reactors.balance_work`
(it never changes the `Work`). Comes after `reactors.balance_work`; read by
`reactors.balance_bounds` (which targets can take a side) and
`reactors.balance_search` (copy-taking candidates scored at every node at once).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from reactors.balance_work import NM, Work

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]


class NodeArrays:
    """Per node (by index) the working model's figures; `res[peer, node]`: what
    node reserves for peer (its N+1 row); `loc[a, b]`: whether nodes a and b share
    a location (None: no locations)."""

    def __init__(self, work: Work) -> None:
        n_nodes = len(work.names)
        self.t_mem = np.array(work.t_mem, dtype=np.float64)
        self.t_dsk = np.array(work.t_dsk, dtype=np.float64)
        self.sden = np.array(work.sden, dtype=np.float64)
        self.vcpu_limit = np.array(work.vcpu_limit, dtype=np.float64)
        self.loc: Bools | None = None
        if work.has_locs:
            self.loc = np.array([[bool(a & b) for b in work.locs] for a in work.locs], np.bool_)
        self.res = np.zeros((n_nodes, n_nodes), dtype=np.int64)
        self.f_dsk = np.zeros(n_nodes, dtype=np.int64)
        self.r_mem = np.zeros(n_nodes, dtype=np.int64)
        self.c_free = np.zeros(n_nodes, dtype=np.int64)
        self.f_mem = np.zeros(n_nodes, dtype=np.int64)
        self.all_vcpus = np.zeros(n_nodes, dtype=np.int64)
        self.ispind = np.zeros(n_nodes, dtype=np.int64)
        self.n_all = np.zeros(n_nodes, dtype=np.int64)
        self.vals = np.zeros((n_nodes, NM))
        self.seen = [-1] * n_nodes  # each node's `Work.version` its figures are of

    def refresh(self, work: Work) -> list[int]:
        """Copy the figures of every node that changed since the last refresh
        (all of them the first time); returns those nodes."""
        changed: list[int] = []
        for k, version in enumerate(work.version):
            if version == self.seen[k]:
                continue
            self.seen[k] = version
            changed.append(k)
            self.res[:, k] = 0
            for peer, v in work.rows[k].items():
                self.res[peer, k] = v
            self.f_dsk[k] = work.f_dsk[k]
            self.r_mem[k] = work.r_mem[k]
            self.c_free[k] = work.c_free[k]
            self.f_mem[k] = work.f_mem[k]
            self.all_vcpus[k] = work.all_vcpus[k]
            self.ispind[k] = work.ispind[k]
            self.n_all[k] = work.n_pri[k] + work.n_sec[k]
            self.vals[k] = work.vals[k]
        return changed
