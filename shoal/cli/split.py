"""``shoal split server|device``: split learning over gRPC, for experiments.

Every process cuts the same built-in dataset into the same clients (as ``shoal server
--experiment`` does); ``shoal run`` with a ``[split]`` table runs split learning in one
process. See :mod:`shoal.split.cli` for the flags.
"""

from __future__ import annotations

from typing import Any

from shoal.split.cli import add_commands


def add_parser(sub: Any) -> None:
    split = sub.add_parser(
        "split",
        help="split learning over gRPC: a server part and device parts exchanging activations",
        description="Split learning (SplitNN, SplitFed) over gRPC with TLS or tokens. Experiments: "
        "every process cuts the same dataset into the same clients. For one process, use "
        "shoal run with a [split] table.",
    )
    add_commands(split.add_subparsers(dest="split_command", required=True))
