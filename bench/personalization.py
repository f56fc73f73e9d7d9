"""Per-client accuracy of each personalization method against FedAvg, on strongly non-IID clients.

Two tasks, as issue 16 names them:

- **Fashion-MNIST, Dirichlet(0.1)** over 100 clients (each holds out 20% of its examples),
  10 clients a round, E = 1, B = 32, SGD lr 0.05, --rounds rounds, the small CNN with batch
  norm (`cnn_bn`, so that FedBN runs on the same model as the others).
- **As You Like It**, one client per speaking role (15 roles, 20% of each role's windows
  held out), the char LSTM (one layer of 128), 5 roles a round, 50 local steps of B = 10,
  SGD lr 1.0, --text-rounds rounds. FedBN has no batch norm to keep there ("n/a").

After the last round every client is evaluated on its own held-out data with its own model
(the global model for FedAvg; the global model fine-tuned for one local epoch for
"finetune"; the personal layers, Ditto's personal model or APFL's mixture otherwise). The
table gives the distribution over clients (mean, 10th percentile, worst), the example-
weighted accuracy, the global model's mean over the same clients, and the wall time.

    .venv/bin/python bench/personalization.py [--rounds 30] [--text-rounds 20] [--only fmnist]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and uses the 8x8
digits. Writes bench/results/personalization.json and docs/figures/personalization.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shoal import config as cfgmod
from shoal import experiment
from shoal.data import fashion_mnist_available
from shoal.errors import ConfigError
from shoal.messages import EvalResult, EvalTask
from shoal.runtime.simulation import Simulation

OUT = Path(__file__).parent / "results"
FIGURE = Path(__file__).parents[1] / "docs" / "figures" / "personalization.png"
METHODS: dict[str, dict[str, Any]] = {  # name -> [personalization] keys
    "fedavg": {},
    "fedavg + finetune": {"method": "finetune"},
    "fedper": {"method": "fedper"},
    "fedrep": {"method": "fedrep", "head_epochs": 1},
    "fedbn": {"method": "fedbn"},
    "ditto": {"method": "ditto", "ditto_lambda": 0.1},
    "apfl": {"method": "apfl"},
}


def image_task(rounds: int, fmnist: bool) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "seed": 0,
        "backend": "inprocess",
        "data": {
            "dataset": "fashion-mnist" if fmnist else "digits",
            "partition": "dirichlet",
            "dirichlet_alpha": 0.1,
            "num_clients": 100,
            "holdout_fraction": 0.2,
        },
        "model": {"name": "cnn_bn"},
        "strategy": {"clients_per_round": 10},
        "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 32},
        "eval": {"eval_every": 0, "federated_eval_every": rounds, "federated_eval_clients": 100},
    }


def text_task(rounds: int) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "seed": 0,
        "backend": "inprocess",
        "data": {"dataset": "shakespeare", "num_clients": 15, "holdout_fraction": 0.2},
        "model": {"name": "char_lstm", "hidden": [128]},
        "strategy": {"clients_per_round": 5},
        "trainer": {"lr": 1.0, "local_steps": 50, "batch_size": 10},
        "eval": {"eval_every": 0, "federated_eval_every": rounds, "federated_eval_clients": 15},
    }


def per_client(sim: Simulation) -> list[dict[str, float]]:
    """Every client with a holdout, scored once more on the final model (the record keeps
    only the distribution; the figure wants each client)."""
    data = sim.data
    holders = [cid for cid, c in data.clients.items() if c.test is not None and len(c.test)]  # type: ignore[union-attr]
    outs = sim.backend.evaluate([EvalTask(sim.round, cid, sim.params) for cid in holders])
    return [
        {"client": o.client_id, "accuracy": float(o.metrics["accuracy"]),
         "global": float(o.metrics.get("global_accuracy", o.metrics["accuracy"]))}
        for o in outs if isinstance(o, EvalResult)
    ]  # fmt: skip


def run(raw: dict[str, Any], settings: dict[str, Any], data: Any) -> dict[str, Any] | None:
    raw = {**raw, "personalization": settings} if settings else raw
    cfg = cfgmod.from_dict(raw)
    try:
        sim = experiment.build(cfg, None, data=data)
    except ConfigError as exc:
        if "batch-norm" in str(exc):
            return None  # FedBN on a model without batch norm
        raise
    start = time.perf_counter()
    history = sim.run(cfg.rounds)
    wall = time.perf_counter() - start
    last = history.records[-1]
    clients = per_client(sim)
    acc = np.array([c["accuracy"] for c in clients])
    return {
        "clients": len(clients),
        "weighted": last["fed_eval_accuracy"],
        "mean": float(acc.mean()),
        "p10": float(np.percentile(acc, 10)),
        "worst": float(acc.min()),
        "global_mean": float(np.mean([c["global"] for c in clients])),
        "wall_s": wall,
        "per_client": clients,
    }


def table(title: str, rows: dict[str, dict[str, Any] | None]) -> None:
    print(f"\n{title}")
    print(f"{'method':<20}{'mean':>7}{'p10':>7}{'worst':>7}{'weighted':>10}{'global':>8}{'wall s':>8}")
    for name, r in rows.items():
        if r is None:
            print(f"{name:<20}{'n/a: the model has no batch norm':>47}")
            continue
        print(
            f"{name:<20}{r['mean']:>7.3f}{r['p10']:>7.3f}{r['worst']:>7.3f}{r['weighted']:>10.3f}"
            f"{r['global_mean']:>8.3f}{r['wall_s']:>8.1f}"
        )


def figure(results: dict[str, dict[str, dict[str, Any] | None]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (task, rows) in zip(axes[0], results.items(), strict=True):
        names = [n for n, r in rows.items() if r is not None]
        values = [[c["accuracy"] for c in rows[n]["per_client"]] for n in names]  # type: ignore[index]
        ax.boxplot(values, whis=(10, 90), showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        ax.set_ylabel("per-client accuracy (own held-out data)")
        ax.set_title(task)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="image task rounds")
    ap.add_argument("--text-rounds", type=int, default=20, help="As You Like It rounds")
    ap.add_argument("--only", choices=["fmnist", "text"], help="one task")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if unknown := set(methods) - set(METHODS):
        ap.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    fmnist = fashion_mnist_available()
    if not fmnist:
        print("note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); using digits")
    tasks = {}
    if args.only != "text":
        name = "Fashion-MNIST Dirichlet(0.1)" if fmnist else "digits Dirichlet(0.1)"
        tasks[name] = image_task(args.rounds, fmnist)
    if args.only != "fmnist":
        tasks["As You Like It roles"] = text_task(args.text_rounds)
    results: dict[str, dict[str, dict[str, Any] | None]] = {}
    for task, raw in tasks.items():
        data = experiment.load_data(cfgmod.from_dict(raw))
        results[task] = {m: run(raw, METHODS[m], data) for m in methods}
        table(task, results[task])
    OUT.mkdir(exist_ok=True)
    settings = {"rounds": args.rounds, "text_rounds": args.text_rounds, "fmnist": fmnist}
    (OUT / "personalization.json").write_text(json.dumps({**settings, "results": results}, indent=1))
    figure(results)
    print(f"\nwrote {OUT / 'personalization.json'} and {FIGURE}")


if __name__ == "__main__":
    main()
