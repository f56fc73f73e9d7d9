"""Why DP: Deep Leakage from Gradients against shoal's client path, with and without noise.

Each victim is a client holding one 8x8 digit that trains one SGD step (batch size 1) of
the small sigmoid CNN and sends its update through the configured local-DP transform.
The attacker knows the model and the learning rate, recovers the gradient (``-delta/lr``)
and runs DLG with iDLG's label trick (shoal.attacks). PSNR compares each reconstruction
with the private image (higher: a better copy; ~80 dB is exact, < 10 dB is noise).

    .venv/bin/python bench/gradient_inversion.py [--victims 20]

Prints a table (median PSNR and label accuracy per noise level) and writes
bench/results/gradient_inversion.png with the private images and the reconstructions.
"""

from __future__ import annotations

import argparse
import functools
import statistics
from pathlib import Path

import numpy as np
import torch

from shoal.attacks import gradient_from_update, invert_gradient, psnr, small_cnn
from shoal.client import TorchTrainer, run_train
from shoal.data import ClientData, digits
from shoal.messages import TrainResult, TrainTask
from shoal.params import from_module, to_module
from shoal.privacy import LocalDP

OUT = Path(__file__).parent / "results"
LR = 0.1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--victims", type=int, default=20)
    ap.add_argument("--steps", type=int, default=100, help="L-BFGS iterations per attack")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = digits()
    model = functools.partial(small_cnn, 10)
    params, spec = from_module(model())
    net = model()
    to_module(params, spec, net)
    trainer = TorchTrainer(lr=LR, local_steps=1, batch_size=1).build(model)

    def update(i: int, transforms: list) -> np.ndarray:
        task = TrainTask(1, f"victim{i}", params, i)
        out = run_train(trainer, task, ClientData(data.train.subset([i])), transforms, run_seed=0)
        assert isinstance(out, TrainResult)
        return out.payload["delta"]

    victims = range(args.victims)
    norms = [float(np.linalg.norm(update(i, []))) for i in victims]
    bound = statistics.median(norms)  # clip at the median update norm
    levels: list[tuple[str, float | None]] = [("no defence", None)] + [
        (f"local DP z={z:g}", z) for z in (0.001, 0.01, 0.1, 1.0)
    ]
    rows, images = [], {}
    for name, z in levels:
        scores, labels, recon = [], 0, []
        for i in victims:
            transforms = [] if z is None else [LocalDP(bound, z, noise="seeded")]
            found = invert_gradient(
                net, gradient_from_update(net, update(i, transforms), LR), (1, 8, 8), args.steps
            )
            scores.append(psnr(found.image, data.train.x[i : i + 1]))
            labels += found.label == int(data.train.y[i])
            recon.append(found.image)
        rows.append((name, statistics.median(scores), labels / len(victims)))
        images[name] = recon
        print(f"{name:>18}: median PSNR {rows[-1][1]:6.1f} dB, labels right {rows[-1][2]:.0%}", flush=True)
    print(f"\nclip norm C = {bound:.4f} (median update norm); noise std per coordinate = z * C")
    print("\n| defence | median PSNR (dB) | labels recovered |\n|---|---|---|")
    for name, value, acc in rows:
        print(f"| {name} | {value:.1f} | {acc:.0%} |")
    _figure(data.train.x[: min(6, args.victims)], images, OUT / "gradient_inversion.png")


def _figure(originals: torch.Tensor, images: dict[str, list[torch.Tensor]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(originals)
    names = ["private", *images]
    fig, axes = plt.subplots(len(names), cols, figsize=(1.3 * cols, 1.4 * len(names)))
    for r, name in enumerate(names):
        for c in range(cols):
            img = originals[c] if name == "private" else images[name][c][0]
            axes[r][c].imshow(img.clamp(0, 1).squeeze().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r][c].axis("off")
        axes[r][0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
