"""Non-IID algorithms on the papers' own settings: FedProx's synthetic tasks and Fashion-MNIST.

Synthetic(alpha, beta) (Li et al. 2020): 30 devices, multinomial logistic regression,
10 devices a round, SGD lr 0.01, B = 10, E = 20, 200 rounds; with 0% and 90% stragglers
(a straggler runs a uniform 1..20 local epochs). FedAvg drops the stragglers' work, as
in the paper; every other algorithm keeps it. Fashion-MNIST: 100 clients by Dirichlet(0.1)
over labels, the 2NN, 10 clients a round, lr 0.05, B = 10, E = 1, 100 rounds.

Every algorithm is configured exactly as a user selects it (``[strategy] name = ...``).
Server learning rates: 1.0 for the SGD-style rules, FedAvgM momentum 0.9, FedAdam 0.03
(picked from {0.01, 0.03, 0.1} on 40 rounds of synthetic(1,1); Reddi et al. tune it per task).

    .venv/bin/python bench/noniid.py                 # the full table (~40 min on one core)
    .venv/bin/python bench/noniid.py --rounds 20 --only synthetic(1,1)   # a quick look

Prints a table per setting: final test accuracy, rounds to --target, the final training
loss, and the spread (standard deviation) of test accuracy over the last 20% of rounds;
writes every curve to bench/results/noniid.json and the paper's Figure 1 analogue
(synthetic(1,1), 90% stragglers) to bench/results/noniid_stragglers.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoal import config as cfgmod
from shoal import experiment
from shoal.client import evaluate_module
from shoal.data import ArrayDataset, fashion_mnist_available
from shoal.params import FlatModule

OUT = Path(__file__).parent / "results"

# name -> [strategy] keys; FedAvg's drop_stragglers is set per setting below
ALGORITHMS: dict[str, dict[str, Any]] = {
    "FedAvg": {"name": "fedavg"},
    "FedProx mu=0": {"name": "fedprox", "proximal_mu": 0.0},
    "FedProx mu=0.01": {"name": "fedprox", "proximal_mu": 0.01},
    "FedProx mu=1": {"name": "fedprox", "proximal_mu": 1.0},
    "SCAFFOLD": {"name": "scaffold"},
    "FedAdam": {"name": "fedadam", "server_lr": 0.03},
    "FedAvgM": {"name": "fedavgm", "server_lr": 1.0, "server_momentum": 0.9},
    "FedNova": {"name": "fednova"},
    "FedDyn": {"name": "feddyn", "feddyn_alpha": 0.01},
}
SYNTHETIC = {"synthetic(0,0)": (0.0, 0.0), "synthetic(0.5,0.5)": (0.5, 0.5), "synthetic(1,1)": (1.0, 1.0)}


def synthetic_config(
    alpha: float, beta: float, strategy: dict[str, Any], stragglers: float, rounds: int
) -> dict:
    return {
        "rounds": rounds,
        "seed": 0,
        "data": {"dataset": "synthetic", "synthetic_alpha": alpha, "synthetic_beta": beta, "num_clients": 30},
        "model": {"name": "mlp", "hidden": []},
        "strategy": {
            **strategy,
            "clients_per_round": 10,
            "straggler_fraction": stragglers,
            "drop_stragglers": strategy["name"] == "fedavg" and stragglers > 0,
        },
        "trainer": {"lr": 0.01, "local_epochs": 20, "batch_size": 10},
    }


def fmnist_config(strategy: dict[str, Any], rounds: int) -> dict:
    return {
        "rounds": rounds,
        "seed": 0,
        "data": {
            "dataset": "fashion-mnist",
            "partition": "dirichlet",
            "dirichlet_alpha": 0.1,
            "num_clients": 100,
        },
        "model": {"name": "mcmahan_2nn"},
        "strategy": {**strategy, "clients_per_round": 10},
        "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 10},
    }


def run_one(raw: dict) -> dict[str, Any]:
    """One run; the training loss is the global model's on all clients' training data, as
    the paper plots it (the clients' own running loss would flatter drifting local models)."""
    cfg = cfgmod.from_dict(raw)
    sim = experiment.build(cfg, None)
    train = ArrayDataset(
        torch.cat([c.train.x for c in sim.data.clients.values()]),
        torch.cat([c.train.y for c in sim.data.clients.values()]),
    )
    probe = FlatModule(experiment.model_factory(cfg, sim.data)())
    loss: list[float] = []

    def global_loss(record: dict[str, Any]) -> None:
        probe.load(sim.params)
        loss.append(evaluate_module(probe.module, train, 8192)[0])

    start = time.perf_counter()
    history = sim.run(cfg.rounds, [global_loss])
    acc = [r.get("test_accuracy", float("nan")) for r in history.records]
    return {"accuracy": acc, "train_loss": loss, "seconds": time.perf_counter() - start}


def summarize(curve: dict[str, Any], target: float) -> dict[str, Any]:
    acc = np.array(curve["accuracy"])
    tail = acc[-max(1, len(acc) // 5) :]
    hit = np.flatnonzero(acc >= target)
    loss = [v for v in curve["train_loss"] if np.isfinite(v)]
    return {
        "final": float(acc[-1]),
        "rounds_to_target": int(hit[0]) + 1 if len(hit) else None,
        "final_loss": loss[-1] if loss else float("nan"),
        "spread": float(tail.std()),
    }


def table(title: str, rows: dict[str, dict[str, dict[str, Any]]], target: float) -> str:
    sets = list(next(iter(rows.values())))
    head = f"| algorithm | {' | '.join(sets)} |"
    lines = [
        f"### {title}",
        f"final test accuracy / rounds to {target:.0%} / final train loss / accuracy spread (last 20%)",
        "",
        head,
        "|" + "---|" * (len(sets) + 1),
    ]
    for algo, by_set in rows.items():
        cells = []
        for s in sets:
            m = by_set[s]
            r = m["rounds_to_target"] if m["rounds_to_target"] is not None else "-"
            cells.append(f"{m['final']:.3f} / {r} / {m['final_loss']:.3f} / {m['spread']:.3f}")
        lines.append(f"| {algo} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        rounds = np.arange(1, len(curve["accuracy"]) + 1)
        ax_loss.plot(rounds, curve["train_loss"], label=name)
        ax_acc.plot(rounds, curve["accuracy"], label=name)
    ax_loss.set(xlabel="round", ylabel="training loss", title="synthetic(1,1), 90% stragglers", yscale="log")
    ax_acc.set(xlabel="round", ylabel="test accuracy")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="synthetic rounds (the paper: 200)")
    ap.add_argument("--fmnist-rounds", type=int, default=100)
    ap.add_argument("--target", type=float, default=0.7, help="accuracy for 'rounds to target'")
    ap.add_argument("--only", default="", help="run one setting: a synthetic name or fmnist")
    ap.add_argument("--algorithms", default="", help="comma-separated subset of: " + ", ".join(ALGORITHMS))
    args = ap.parse_args()
    torch.set_num_threads(1)  # leave the other core to whoever shares the machine
    algos = {k: v for k, v in ALGORITHMS.items() if not args.algorithms or k in args.algorithms.split(",")}
    OUT.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, dict[str, Any]]] = {}  # setting -> algorithm -> curve
    settings: list[tuple[str, str, Any]] = []
    for frac in (0.0, 0.9):
        for name, (a, b) in SYNTHETIC.items():
            if not args.only or args.only == name:
                settings.append((f"{frac:.0%} stragglers", name, (a, b, frac)))
    if (not args.only or args.only == "fmnist") and fashion_mnist_available():
        settings.append(("Fashion-MNIST Dirichlet(0.1)", "fmnist", None))
    elif not args.only or args.only == "fmnist":
        print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); skipping it")
    for group, name, params in settings:
        for algo, strategy in algos.items():
            if params is None:
                raw = fmnist_config(strategy, args.fmnist_rounds)
            else:
                raw = synthetic_config(params[0], params[1], strategy, params[2], args.rounds)
            curve = run_one(raw)
            curves.setdefault(f"{group}|{name}", {})[algo] = curve
            s = summarize(curve, args.target)
            print(
                f"{group:>28} {name:>18} {algo:>16}: acc {s['final']:.3f}  {curve['seconds']:.0f} s",
                flush=True,
            )
    (OUT / "noniid.json").write_text(json.dumps(curves))
    groups: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for key, by_algo in curves.items():
        group, name = key.split("|")
        for algo, curve in by_algo.items():
            groups.setdefault(group, {}).setdefault(algo, {})[name] = summarize(curve, args.target)
    print()
    for group, rows in groups.items():
        print(table(group, rows, args.target))
        print()
    figure = curves.get("90% stragglers|synthetic(1,1)")
    if figure:
        plot(figure, OUT / "noniid_stragglers.png")
        print(f"figure: {OUT / 'noniid_stragglers.png'}")


if __name__ == "__main__":
    main()
