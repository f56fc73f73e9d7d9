"""``shoal run``: a federated training simulation, from defaults, a TOML file and flags."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from shoal import config as cfgmod
from shoal.apps import label
from shoal.cli.common import config_flags, config_keys, overrides, print_result, run_config, run_folder
from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.runtime.history import History


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
    config_flags(run)
    run.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last round",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    config_keys(run)
    run.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    if args.resume is not None:
        if args.config is not None or overrides(args):
            raise ShoalError(
                "--resume continues a run with its saved config.toml; drop --config and other flags"
            )
        out = args.resume
        cfg = cfgmod.load(out / "config.toml")
    else:
        cfg = run_config(args)
        out = run_folder(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    # torch and the rest load here, after every mistake on the command line has been named
    from shoal.report import RoundProgress, render
    from shoal.runtime.history import MetricsLog

    done = 0
    if args.resume is not None and (out / "metrics.jsonl").exists():
        done = len(MetricsLog(out / "metrics.jsonl").read())
    console.print(
        f"[bold]shoal[/bold] {label(cfg.data.dataset)} / {label(cfg.model.name)} / "
        f"{label(cfg.split.protocol or cfg.strategy.name)}: "
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
    from shoal import experiment

    if args.resume is not None:
        return experiment.resume(out, callbacks=callbacks)
    return experiment.run(cfg, out, callbacks)
