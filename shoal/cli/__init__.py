"""The ``shoal`` command: one module per subcommand.

``run`` (a simulation), ``new`` (a project of your own), ``report`` (re-render a run's
page), ``dashboard`` (a live page of a run folder), ``privacy`` (epsilon ahead of a run),
``predict`` (complete typed text with a run's next-character model),
the network deployment's ``certs``, ``server``, ``client`` and ``keyholder`` (CKKS's key
holder as its own party), and ``split`` (split
learning over gRPC). Each module adds its parser and names its handler; :func:`main`
parses, dispatches and turns a :class:`~shoal.errors.ShoalError` into one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from shoal.cli import certs, client, dashboard, keyholder, new, predict, privacy, report, run, server, split
from shoal.errors import ShoalError

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shoal", description="Federated deep learning for PyTorch.", allow_abbrev=False
    )
    sub = p.add_subparsers(dest="command", required=True)
    for command in (run, new, report, dashboard, privacy, certs, server, client, keyholder, split, predict):
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        code: int = args.handler(args, console)
        return code
    except ShoalError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 2
