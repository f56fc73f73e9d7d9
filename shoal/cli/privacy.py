"""``shoal privacy``: epsilon of a DP run before running it, or the noise for a target epsilon."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from shoal import config as cfgmod
from shoal.errors import ShoalError


def add_parser(sub: Any) -> None:
    priv = sub.add_parser(
        "privacy",
        help="epsilon of a DP run before running it, or the noise for a target epsilon",
        allow_abbrev=False,
        description="Client-level (epsilon, delta) of DP-FedAvg from Google's dp-accounting. Settings "
        "come from --config (its [privacy], [strategy], rounds and data), then the flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  shoal privacy --config examples/digits_central_dp.toml\n"
        "  shoal privacy --clients 10000 --clients-per-round 100 --rounds 500 --noise-multiplier 1.0\n"
        "  shoal privacy --clients 10000 --clients-per-round 100 --rounds 500 --target-epsilon 3",
    )
    priv.add_argument("--config", type=Path, help="a run's TOML config")
    priv.add_argument("--clients", type=int, help="N, clients available each round")
    priv.add_argument("--clients-per-round", type=int, help="m (fixed) or qN (poisson)")
    priv.add_argument(
        "--sampling", choices=["poisson", "fixed"], help="how clients are picked (default poisson)"
    )
    priv.add_argument("--rounds", type=int, help="rounds of training")
    priv.add_argument("--noise-multiplier", type=float, help="z: noise std / clip norm")
    priv.add_argument("--delta", type=float, help="default 1/N^1.1")
    priv.add_argument("--target-epsilon", type=float, help="print the noise multiplier that meets it instead")
    priv.add_argument("--accountant", choices=["rdp", "pld"], help="default rdp")
    priv.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from shoal.privacy.accounting import calibrate_noise, epsilon
    from shoal.sampling import Sampling

    cfg = cfgmod.load(args.config) if args.config else cfgmod.RunConfig()
    from shoal import experiment

    clients = args.clients or (len(experiment.load_data(cfg)) if args.config else None)
    per_round = args.clients_per_round or (cfg.strategy.clients_per_round if args.config else None)
    if not clients or not per_round:
        raise ShoalError(
            "say how many clients there are and how many join a round: --clients and "
            "--clients-per-round, or --config"
        )
    kind = args.sampling or (cfg.strategy.sampling.value if args.config else "poisson")
    sampling = (
        Sampling.poisson(per_round / clients, clients)
        if kind == "poisson"
        else Sampling.fixed(per_round, clients)
    )
    rounds = args.rounds or cfg.rounds
    delta = args.delta or cfg.privacy.delta_for(clients)
    accountant = args.accountant or cfg.privacy.accountant.value
    target = args.target_epsilon or (None if args.noise_multiplier else cfg.privacy.target_epsilon)
    what = f"{kind} sampling of {per_round} in {clients} clients a round, delta {delta:.3g} ({accountant})"
    if target is not None and args.noise_multiplier is None and not (args.config and not args.target_epsilon):
        z = calibrate_noise(sampling, rounds, target, delta, accountant)
        console.print(what)
        console.print(f"  noise_multiplier {z:.4f} keeps epsilon <= {target:g} for {rounds} rounds")
        return 0
    z = args.noise_multiplier or cfg.privacy.noise_multiplier
    console.print(f"{what}, noise_multiplier {z:g}")
    for r in sorted({max(1, rounds // 4), max(1, rounds // 2), rounds}):
        console.print(f"  after {r:>6} rounds: epsilon {epsilon(sampling, z, r, delta, accountant):.4f}")
    if target is not None:
        console.print(f"  (target_epsilon {target:g}: the run stops before it passes it)")
    return 0
