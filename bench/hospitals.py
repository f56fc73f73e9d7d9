"""Each hospital's accuracy trained alone, federated, and on everyone's data pooled.

The question a hospital asks before joining: do I do better than on my own patients, and
how far is the federation from the centralized model nobody is allowed to train? The data
is examples/hospitals.toml's (shoal/data/hospitals.py: five sites of very different size
and case mix); every model is its MLP (30 -> 16 -> 2).

- **alone**: the site trains on its own training patients only, for as many epochs as the
  federated run gives it (rounds x local_epochs), SGD lr 0.05, B = 16.
- **federated**: examples/hospitals.toml as it is (FedProx mu 0.1, CKKS on: every update
  encrypted), scored by federated evaluation on each site's held-out 30%.
- **central**: all sites' training patients pooled, the same epochs and optimizer.

Each is scored on each site's own held-out patients (accuracy, and recall of malignant:
the share of cancers found) and on the server's test set, averaged over --seeds splits
(the holdouts are small: 14 patients at the rural clinic).

    .venv/bin/python bench/hospitals.py [--seeds 5]

Writes bench/results/hospitals.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shoal import config as cfgmod
from shoal import experiment
from shoal.client.trainer import score_module
from shoal.data import ArrayDataset
from shoal.data.hospitals import SITES, hospitals
from shoal.models import mlp

ROOT = Path(__file__).parents[1]
OUT = ROOT / "bench" / "results"
METRICS = ("recall",)


def train(data: ArrayDataset, epochs: int, seed: int, lr: float, batch: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = mlp((30,), 2, hidden=(16,))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=g)
        for s in range(0, len(data), batch):
            idx = order[s : s + batch]
            opt.zero_grad()
            F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            opt.step()
    return model


def pooled(parts: list[ArrayDataset]) -> ArrayDataset:
    return ArrayDataset(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))


def one_seed(seed: int) -> dict[str, dict[str, dict[str, float]]]:
    cfg = cfgmod.load(ROOT / "examples" / "hospitals.toml")
    cfg = replace(cfg, seed=seed, eval=replace(cfg.eval, federated_eval_every=cfg.rounds, metrics=METRICS))
    data = hospitals(len(SITES), seed=seed, holdout_fraction=cfg.data.holdout_fraction)
    t = cfg.trainer
    epochs = cfg.rounds * t.local_epochs
    out: dict[str, dict[str, dict[str, float]]] = {"alone": {}, "federated": {}, "central": {}}
    assert data.test is not None
    central = train(pooled([c.train for c in data.clients.values()]), epochs, seed, t.lr, t.batch_size)
    for site, c in data.clients.items():
        assert c.test is not None
        alone = train(c.train, epochs, seed, t.lr, t.batch_size)
        for name, model in (("alone", alone), ("central", central)):
            got = score_module(model, c.test, METRICS)
            got["test_accuracy"] = score_module(model, data.test)["accuracy"]
            out[name][site] = got
    with tempfile.TemporaryDirectory() as tmp:
        experiment.run(cfg, Path(tmp))
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    for site, scores in summary["clients"].items():
        out["federated"][site] = {**scores, "test_accuracy": summary["final_test_accuracy"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    start = time.perf_counter()
    runs = [one_seed(s) for s in range(args.seeds)]
    sites = [s.name for s in SITES]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for how in ("alone", "federated", "central"):
        table[how] = {
            site: {
                k: float(np.mean([r[how][site][k] for r in runs]))
                for k in ("accuracy", "recall", "test_accuracy")
            }
            for site in sites
        }
    sizes = hospitals(len(SITES), seed=0).description
    print(
        f"hospitals: 5 sites, mean over {args.seeds} splits; "
        "accuracy / recall of malignant on each site's holdout"
    )
    print(f"{'site':<11} {'patients':>8} | {'alone':>13} | {'federated':>13} | {'central':>13}")
    for site in sites:
        cells = [f"{table[h][site]['accuracy']:.3f} / {table[h][site]['recall']:.3f}" for h in table]
        print(f"{site:<11} {sizes[site]:>8} | " + " | ".join(f"{c:>13}" for c in cells))
    means = {h: float(np.mean([table[h][s]["accuracy"] for s in sites])) for h in table}
    tests = {h: float(np.mean([table[h][s]["test_accuracy"] for s in sites])) for h in table}
    print(f"{'mean':<11} {'':>8} | " + " | ".join(f"{means[h]:>13.3f}" for h in table))
    print(f"{'test set':<11} {'':>8} | " + " | ".join(f"{tests[h]:>13.3f}" for h in table))
    print(
        f"({time.perf_counter() - start:.0f} s; 'alone' on the test set: "
        "the mean over the five sites' models)"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "hospitals.json").write_text(
        json.dumps({"seeds": args.seeds, "table": table, "test": tests}, indent=2)
    )


if __name__ == "__main__":
    main()
