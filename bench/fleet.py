"""How long a federation takes on a fleet of phones: synchronous FedAvg against FedBuff.

Fashion-MNIST cut into 2,000 clients by Dirichlet(0.3) over labels (30 examples each on
average), McMahan's CNN (6.7 MB each way), one local epoch (B = 10, lr 0.05), every
client a device of the ``phones`` fleet
(shoal/fleet/data/phones.toml: compute tiers, networks, diurnal eligibility across time
zones, one task per device a day; sources in docs/fleet-sources.md). Three ways to run
the rounds, each until the central test accuracy reaches ``--target``:

- FedAvg, 20 devices a round, no deadline: a round waits for its slowest device;
- FedAvg, 20 a round with 30% over-selection and a ``--deadline`` (Bonawitz et al. 2019);
- FedBuff (Nguyen et al. 2022): 26 devices training at once, a server step every 10
  results, staleness weight (1 + tau)^-0.5.

Prints virtual hours and server steps to the target, device tasks spent, results the
server threw away (late, not needed, left mid-task), training energy, and who got to
contribute by tier against the tiers' shares of the fleet. The FedBuff paper reports it
about 3x faster than synchronous FL in virtual time; the table says whether this setting
reproduces that. Needs Fashion-MNIST (apt-get install dataset-fashion-mnist).

    .venv/bin/python bench/fleet.py                    # about 10 min on 2 cores
    .venv/bin/python bench/fleet.py --target 0.6 --max-results 3000
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from shoal import config as cfgmod
from shoal import experiment
from shoal.data import fashion_mnist_available
from shoal.fleet import load_fleet

RUNS: dict[str, dict[str, Any]] = {
    "FedAvg, no deadline": {"name": "fedavg", "clients_per_round": 20},
    "FedAvg, deadline + 30% over-selection": {
        "name": "fedavg",
        "clients_per_round": 20,
        "over_selection": 0.3,
    },
    "FedBuff (K=10, 26 at once)": {"name": "fedbuff", "clients_per_round": 26, "buffer_size": 10},
}


def config(strategy: dict[str, Any], args: argparse.Namespace, max_rounds: int) -> cfgmod.RunConfig:
    strategy = dict(strategy)
    if "over_selection" in strategy:
        strategy["deadline_s"] = args.deadline
    return cfgmod.from_dict(
        {
            "rounds": max_rounds,
            "seed": 0,
            "backend": "inprocess",
            "fleet": "phones",
            "data": {
                "dataset": "fashion-mnist",
                "partition": "dirichlet",
                "dirichlet_alpha": 0.3,
                "num_clients": args.clients,
            },
            "model": {"name": args.model},
            "strategy": strategy,
            "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 10},
        }
    )


def run(name: str, strategy: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    per_step = strategy.get("buffer_size", strategy["clients_per_round"])
    cfg = config(strategy, args, max_rounds=args.max_results // per_step)
    sim = experiment.build(cfg, None)
    start = time.perf_counter()
    history = sim.run(cfg.rounds, stop_when=lambda r: r.get("test_accuracy", 0.0) >= args.target)
    records = history.records
    reached = records[-1].get("test_accuracy", 0.0) >= args.target
    tiers: Counter[str] = Counter()
    for r in records:
        for key, value in r.items():
            if key.startswith("tier_") and key.endswith("_completed"):
                tiers[key.removeprefix("tier_").removesuffix("_completed")] += int(value)
    wasted = sum(r["fleet_late"] + r["fleet_not_needed"] + r["fleet_dropped"] for r in records)
    return {
        "name": name,
        "hours": records[-1]["virtual_hours"] if reached else float("nan"),
        "steps": len(records) if reached else None,
        "accuracy": records[-1].get("test_accuracy", 0.0),
        "tasks": sum(r["clients_selected"] for r in records),
        "wasted": int(wasted),
        "energy_wh": sum(r["energy_wh"] for r in records),
        "tiers": tiers,
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=float, default=0.70, help="central test accuracy to reach")
    p.add_argument("--deadline", type=float, default=60.0, help="virtual seconds a synchronous round waits")
    p.add_argument("--max-results", type=int, default=4000, help="give up after this many device results")
    p.add_argument("--clients", type=int, default=2000, help="devices (Fashion-MNIST cut into this many)")
    p.add_argument("--model", default="mcmahan_cnn", help="mcmahan_cnn (6.7 MB) or mcmahan_2nn (0.8 MB)")
    args = p.parse_args()
    if not fashion_mnist_available():
        raise SystemExit("bench/fleet.py needs Fashion-MNIST: apt-get install dataset-fashion-mnist")
    fleet = load_fleet("phones")
    rows = [run(name, strategy, args) for name, strategy in RUNS.items()]
    setting = f"{args.clients:,} phones (Dirichlet 0.3), {args.model}"
    print(f"\nFashion-MNIST, {setting}, target test accuracy {args.target:.2f}")
    print(
        f"{'run':40} {'virtual h':>9} {'steps':>6} {'tasks':>6} {'wasted':>6} {'energy Wh':>9} {'wall s':>7}"
    )
    for r in rows:
        hours = f"{r['hours']:.2f}" if r["steps"] else f"> (acc {r['accuracy']:.3f})"
        print(f"{r['name']:40} {hours:>9} {r['steps'] or '-':>6} {r['tasks']:>6} {r['wasted']:>6} "
              f"{r['energy_wh']:>9.2f} {r['wall_s']:>7.1f}")  # fmt: skip
    sync = rows[0]["hours"]
    for r in rows[1:]:
        if r["steps"] and rows[0]["steps"]:
            print(
                f"{r['name']}: {sync / r['hours']:.2f}x the speed of FedAvg without a deadline (virtual time)"
            )
    print("\nwho contributed, by tier (share of results; the fleet's share in brackets)")
    for r in rows:
        total = sum(r["tiers"].values()) or 1
        parts = [f"{t.name} {r['tiers'][t.name] / total:.0%} ({t.share:.0%})" for t in fleet.tiers]
        print(f"  {r['name']:40} " + ", ".join(parts))


if __name__ == "__main__":
    main()
