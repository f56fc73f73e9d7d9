"""Rounds to a target accuracy from a random start versus a start pretrained on public proxy data.

Fashion-MNIST split non-IID over 100 clients (Dirichlet alpha = 0.5), 10 a round, the 2NN,
E = 1, B = 32, SGD lr 0.05. The pretrained start is the same 2NN trained on the server for
--pretrain-epochs epochs over the MNIST subset that ships with shoal (4,000 handwritten
digits: public data of the same shape the devices do not hold, a different domain from
their clothing images), with `[model] init = "pretrain"`. For each start: the test
accuracy the first devices receive, after round 1, after round 5, the first round at or
above each target, the rounds a pretrained start saves, and the server's pretraining time.

    .venv/bin/python bench/cold_start.py [--rounds 60] [--targets 0.7,0.75,0.8]

Without Fashion-MNIST (apt-get install dataset-fashion-mnist) it says so and
stops: the proxy must have the devices' 28x28 shape. Writes bench/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from shoal import config as cfgmod
from shoal import experiment
from shoal.data import fashion_mnist_available

OUT = Path(__file__).parent / "results"


def config(rounds: int, init: str, epochs: int) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "mcmahan_2nn", "init": init}
    if init == "pretrain":
        model.update(pretrain_dataset="mnist-subset", pretrain_epochs=epochs)
    return {
        "rounds": rounds,
        "seed": 0,
        "backend": "inprocess",
        "data": {
            "dataset": "fashion-mnist",
            "partition": "dirichlet",
            "dirichlet_alpha": 0.5,
            "num_clients": 100,
        },
        "model": model,
        "strategy": {"clients_per_round": 10},
        "trainer": {"lr": 0.05, "local_epochs": 1, "batch_size": 32},
    }


def run(raw: dict[str, Any], data: Any, targets: list[float]) -> dict[str, Any]:
    cfg = cfgmod.from_dict(raw)
    began = time.perf_counter()
    sim = experiment.build(cfg, None, data=data)
    tested = sim.test(sim.params)  # what the first devices receive
    assert tested is not None, "Fashion-MNIST has a test set"
    first = tested[1]
    curve = [r["test_accuracy"] for r in sim.run(cfg.rounds).records]
    return {
        "initial": first,
        "round_1": curve[0],
        "round_5": curve[min(4, len(curve) - 1)],
        "final": curve[-1],
        "rounds_to": {str(t): next((i + 1 for i, a in enumerate(curve) if a >= t), None) for t in targets},
        "pretrain_seconds": sim.initial.get("pretrain_seconds", 0.0),
        "wall_s": time.perf_counter() - began,
        "curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--targets", default="0.7,0.75,0.8")
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    args = ap.parse_args()
    if not fashion_mnist_available():
        sys.exit(
            "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); this bench needs it"
        )
    targets = [float(t) for t in args.targets.split(",") if t]
    data = experiment.load_data(cfgmod.from_dict(config(args.rounds, "random", args.pretrain_epochs)))
    rows = {
        init: run(config(args.rounds, init, args.pretrain_epochs), data, targets)
        for init in ("random", "pretrain")
    }
    print(
        f"\n{'start':<10}{'initial':>9}{'round 1':>9}{'round 5':>9}{'final':>8}"
        + "".join(f"{'to ' + str(t):>9}" for t in targets)
        + f"{'pretrain s':>12}"
    )
    for name, r in rows.items():
        hits = "".join(f"{r['rounds_to'][str(t)] or '-':>9}" for t in targets)
        print(
            f"{name:<10}{r['initial']:>9.3f}{r['round_1']:>9.3f}{r['round_5']:>9.3f}{r['final']:>8.3f}{hits}{r['pretrain_seconds']:>12.1f}"
        )
    for t in targets:
        a, b = rows["random"]["rounds_to"][str(t)], rows["pretrain"]["rounds_to"][str(t)]
        if a is not None and b is not None:
            print(f"rounds saved to {t:.0%}: {a - b} ({a} -> {b})")
        else:
            print(
                f"rounds saved to {t:.0%}: not reached by "
                f"{'random' if a is None else 'pretrain'} in {args.rounds}"
            )
    OUT.mkdir(exist_ok=True)
    settings = {"rounds": args.rounds, "pretrain_epochs": args.pretrain_epochs, "targets": targets}
    (OUT / "cold_start.json").write_text(json.dumps({**settings, "results": rows}, indent=1))
    print(f"wrote {OUT / 'cold_start.json'}")


if __name__ == "__main__":
    main()
