"""Forgetting under drift: accuracy on old and new classes over rounds, with and without replay and EWC.

Class-incremental federated learning: Fashion-MNIST (the bundled MNIST subset without it),
a seeded subsample split IID over 20 clients, 10 a round, the 2NN, E = 1, B = 32, SGD lr
0.05. Five classes (chosen by seed) until --drift-round, the other five from then on; a
client's data holds only the current stage's classes (``drift = "new-classes"``). Every
round the global model is scored on the test images of the old classes and of the new.
Forgetting is the old classes' accuracy just before the new ones arrive minus at the end.

    .venv/bin/python bench/drift.py [--rounds 40] [--drift-round 21] [--replay 20,50,200] [--ewc 20000]

Prints a table per round and a summary, writes bench/results/drift.json and
bench/results/drift.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from shoal.client import TorchTrainer
from shoal.continual import ContinualConfig
from shoal.data import LabeledData, fashion_mnist, fashion_mnist_available, iid, mnist_subset
from shoal.data.drift import drifting
from shoal.models import mcmahan_2nn
from shoal.runtime.simulation import Simulation
from shoal.strategy.fedavg import FedAvg

OUT = Path(__file__).parent / "results"
CLIENTS, PER_ROUND = 20, 10


def load(examples: int, seed: int) -> LabeledData:
    """Fashion-MNIST's train set cut to ``examples`` (stratified by the seed), or the MNIST subset."""
    if not fashion_mnist_available():
        print(
            "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); "
            "using the MNIST subset"
        )
        return mnist_subset(seed=seed)
    full = fashion_mnist()
    y = full.train.y.numpy()
    rng = np.random.default_rng(seed)
    per_class = examples // full.num_classes
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)]))
    return LabeledData(full.name, full.train.subset(keep), full.test, full.num_classes)


def run(data: LabeledData, args: argparse.Namespace, **defence: Any) -> dict[str, Any]:
    """One run; returns the accuracy on old, new and all classes after every round."""
    cfg = ContinualConfig(drift="new-classes", drift_rounds=(args.drift_round,), **defence)
    base = iid(data, CLIENTS, seed=args.seed)
    drift = drifting(base, cfg.schedule(base, args.seed))
    model = functools.partial(mcmahan_2nn, drift.input_shape, drift.num_classes)
    trainer = TorchTrainer(lr=0.05, local_epochs=1, batch_size=32, continual=cfg)
    sim = Simulation(model, drift, FedAvg(clients_per_round=PER_ROUND), trainer, seed=args.seed)
    curve: dict[str, list[float]] = {"old": [], "new": [], "all": []}

    def score(record: dict[str, Any]) -> None:  # the loop scores the drift's old and new test sets
        for name in ("old", "new"):
            curve[name].append(float(record[f"test_accuracy_{name}"]))
        curve["all"].append(float(record["test_accuracy"]))

    start = time.perf_counter()
    sim.run(args.rounds, callbacks=[score])
    before = args.drift_round - 2  # index of the last round of stage 0
    return {
        **curve,
        "classes": {"old": list(drift.schedule.groups[0]), "new": list(drift.schedule.groups[1])},
        "forgetting": curve["old"][before] - curve["old"][-1],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--drift-round", type=int, default=21, help="the first round of the new classes")
    ap.add_argument("--replay", default="20,50,200", help="reservoir sizes to try (examples per device)")
    ap.add_argument("--ewc", type=float, default=20000.0, help="EWC's lambda")
    ap.add_argument("--examples", type=int, default=12000, help="Fashion-MNIST training images used")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 2 <= args.drift_round <= args.rounds:
        ap.error("--drift-round must be within the run")
    data = load(args.examples, args.seed)
    sizes = [int(v) for v in args.replay.split(",") if v]
    middle = sizes[len(sizes) // 2] if sizes else 0
    methods: dict[str, dict[str, Any]] = {
        "fedavg": {},
        **{f"replay {m}": {"replay_size": m} for m in sizes},
        f"ewc {args.ewc:g}": {"ewc_lambda": args.ewc},
    }
    if middle:
        methods[f"replay {middle} + ewc {args.ewc:g}"] = {"replay_size": middle, "ewc_lambda": args.ewc}
    results = {}
    for name, defence in methods.items():
        results[name] = run(data, args, **defence)
        print(f"{name}: {results[name]['seconds']:.0f} s", flush=True)
    _table(results, args)
    OUT.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items()} | {"dataset": data.name, "clients": CLIENTS}
    (OUT / "drift.json").write_text(
        json.dumps({**settings, "per_round": PER_ROUND, "runs": results}, indent=1)
    )
    _plot(results, args)


def _table(results: dict[str, Any], args: argparse.Namespace) -> None:
    names = list(results)
    first = next(iter(results.values()))
    print(f"\nold classes {first['classes']['old']}, new classes {first['classes']['new']} from round "
          f"{args.drift_round}; accuracy old / new\n")  # fmt: skip
    print("| round | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for r in range(args.rounds):
        cells = [f"{results[n]['old'][r]:.3f} / {results[n]['new'][r]:.3f}" for n in names]
        print(f"| {r + 1}{' *' if r + 1 == args.drift_round else ''} | " + " | ".join(cells) + " |")
    print(
        "\n| method | old before drift | old at end | forgetting | new at end | all at end |\n"
        + "|---" * 6
        + "|"
    )
    for n in names:
        res = results[n]
        before = res["old"][args.drift_round - 2]
        print(f"| {n} | {before:.3f} | {res['old'][-1]:.3f} | {res['forgetting']:.3f} | "
              f"{res['new'][-1]:.3f} | {res['all'][-1]:.3f} |")  # fmt: skip


def _plot(results: dict[str, Any], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = (
        ("C0", "-", "o"),
        ("C1", "--", "s"),
        ("C2", ":", "^"),
        ("C3", "-.", "D"),
        ("C4", "--", "v"),
        ("C5", ":", "x"),
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    rounds = np.arange(1, args.rounds + 1)
    for ax, which in zip(axes, ("old", "new"), strict=True):
        for i, (name, res) in enumerate(results.items()):
            colour, line, marker = styles[i % len(styles)]
            ax.plot(rounds, res[which], color=colour, linestyle=line, marker=marker, markersize=3, label=name)
        ax.axvline(args.drift_round - 0.5, color="grey", linewidth=0.8)
        classes = next(iter(results.values()))["classes"][which]
        ax.set_title(f"{which} classes {classes}")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "drift.png", dpi=120)
    print(f"plot: {OUT / 'drift.png'}")


if __name__ == "__main__":
    main()
