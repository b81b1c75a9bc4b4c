"""`corral sim` as a plugin of the `corral` command (entry point group
`corral.commands`): the product's CLI finds it through package metadata and never
imports the simulators. Holds only the command's help and two thin hooks; must stay
cheap to import, since `corral --help` reads HELP.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "a lab of simulated nodes (real SSH servers)"


def add_parser(sub: Any) -> None:
    from simulators.cli import add_sim_parser

    add_sim_parser(sub)


def run(args: argparse.Namespace) -> int:
    from simulators.cli import run_sim

    return run_sim(args)
