"""``shoal new NAME``: scaffold a small, runnable project of your own."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal.scaffold import new_project


def add_parser(sub: Any) -> None:
    new = sub.add_parser(
        "new",
        help="make a new project: model, data loader, client, config, README and a test",
        description="Write a small federated learning project into ./NAME that `shoal run` trains "
        "from its folder; change its model, data loader and client to your own.",
        epilog="example:\n  shoal new demo && cd demo && shoal run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new.add_argument("name", help="the project's name (a folder and, with _ for -, its package)")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to make it (default: here)")
    new.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    root = new_project(args.name, args.dir)
    console.print(f"made {root}: now  cd {root} && shoal run", soft_wrap=True)
    return 0
