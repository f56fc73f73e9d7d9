"""``shoal report RUN_DIR``: (re)render report.html for a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console


def add_parser(sub: Any) -> None:
    rep = sub.add_parser("report", help="(re)render report.html for a run folder")
    rep.add_argument("run_dir", type=Path)
    rep.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from shoal.report import render

    console.print(f"wrote {render(args.run_dir)}")
    return 0
