"""``shoal run``: a federated training simulation, from defaults, a TOML file and flags."""

from __future__ import annotations

import argparse
import enum
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal import config as cfgmod
from shoal import experiment
from shoal.apps import find_project, label
from shoal.cli.common import print_result, run_folder
from shoal.errors import ShoalError
from shoal.report import RoundProgress, render
from shoal.runtime.history import History, MetricsLog


def _choices(tp: Any) -> str:
    for t in (tp, *typing.get_args(tp)):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            return "{" + ",".join(str(m.value) for m in t) + "}"
        if typing.get_origin(t) is tuple:
            return "A,B,..."
    return ""


def _default(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(str(_default(v)) for v in value) or "(none)"
    return str(value)


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run a federated training simulation",
        allow_abbrev=False,
        description="Train a model with federated learning across simulated clients. Settings come "
        "from the defaults, then --config FILE (TOML), then the flags below.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  shoal run --config examples/fmnist_noniid.toml "
        "--rounds 50 --clients-per-round 10 --seed 7",
    )
    run.add_argument(
        "--config", type=Path, help="TOML config file (see examples/; default: the project's shoal.toml)"
    )
    run.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last round",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    group = run.add_argument_group("config keys (the same names as in the TOML file)")
    for f in cfgmod.flags():
        key = f"{f.section}.{f.key}" if f.section else f.key
        group.add_argument(
            f.flag,
            dest=f.flag,
            metavar=_choices(f.type) or f.key.upper(),
            default=None,
            help=f"{key} (default: {_default(f.default)})",
        )
    run.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    overrides = {k: v for k, v in vars(args).items() if k.startswith("--") and v is not None}
    if args.resume is not None:
        if args.config is not None or overrides:
            raise ShoalError(
                "--resume continues a run with its saved config.toml; drop --config and other flags"
            )
        out = args.resume
        cfg = cfgmod.load(out / "config.toml")
        done = len(MetricsLog(out / "metrics.jsonl").read()) if (out / "metrics.jsonl").exists() else 0
    else:
        project = find_project()
        if args.config is None and project is not None and (project / "shoal.toml").is_file():
            args.config = project / "shoal.toml"  # run from a project folder: its config
        raw = cfgmod.to_dict(cfgmod.load(args.config)) if args.config else {}
        cfg = cfgmod.from_dict(cfgmod.apply_overrides(raw, overrides))
        out = run_folder(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        done = 0
    console.print(
        f"[bold]shoal[/bold] {label(cfg.data.dataset)} / {label(cfg.model.name)} / "
        f"{label(cfg.strategy.name)}: "
        f"{cfg.rounds} rounds, {cfg.strategy.clients_per_round} of {cfg.data.num_clients} clients a round"
    )
    try:
        if args.quiet:
            history = _go(args, cfg, out, ())
        else:
            with RoundProgress(cfg.rounds, done, console) as bar:
                history = _go(args, cfg, out, (bar,))
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; continue with: shoal run --resume {out}")
        return 130
    render(out)
    print_result(console, history, out)
    return 0


def _go(args: argparse.Namespace, cfg: cfgmod.RunConfig, out: Path, callbacks: Sequence[Any]) -> History:
    if args.resume is not None:
        return experiment.resume(out, callbacks=callbacks)
    return experiment.run(cfg, out, callbacks)
