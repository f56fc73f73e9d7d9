"""``shoal predict RUN_DIR "prefix"``: complete typed text with a run's next-character model.

What a keyboard does with the model it was sent: the run's ``config.toml`` says how to
rebuild the model and which characters its classes are, ``model.safetensors`` holds the
final weights. The model sees the last window of text it was trained on (80 characters
for Shakespeare) and scores every character of its vocabulary as the next one; a
continuation feeds each chosen character back in.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from shoal.apps import label
from shoal.errors import ShoalError

if TYPE_CHECKING:
    from torch import nn

    from shoal.config import RunConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="complete typed text with a run's next-character model",
        allow_abbrev=False,
        description="Load RUN_DIR's config.toml and final model.safetensors (a run on the "
        "shakespeare dataset, or on characters named in data.classes), print the most likely "
        "next characters after PREFIX with their probabilities, and continue PREFIX by "
        "--chars characters: greedy (the most likely each time) or, with --temperature, "
        "sampled with --seed. Runs of whitespace in PREFIX count as one space, as in training.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  shoal run --config examples/keyboard.toml --out runs/keyboard\n"
        '  shoal predict runs/keyboard "All the world\'s a stage, and all the men and women merely"\n'
        '  shoal predict runs/keyboard "I pray you, do not fall in love with me, for" --chars 60 '
        "--temperature 0.8 --seed 1",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (shoal run --out)")
    p.add_argument("prefix", metavar="PREFIX", help="the text typed so far")
    p.add_argument(
        "--chars", type=_whole(0, 10_000), default=40, help="characters to continue by (default 40)"
    )
    p.add_argument("--top", type=_whole(1, 100), default=3, help="next characters to list (default 3)")
    p.add_argument(
        "--temperature",
        type=_temperature,
        default=0.0,
        help="0: greedy (default); > 0: sample from softmax(logits / T), lower is more conservative",
    )
    p.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise ShoalError(f"run folder {run_dir} does not exist; pass the folder shoal run --out wrote")
    from shoal import config as cfgmod

    if not (run_dir / "config.toml").is_file():
        raise ShoalError(f"{run_dir} has no config.toml; pass the folder of a shoal run")
    cfg = cfgmod.load(run_dir / "config.toml")
    vocab, window = vocabulary(cfg, run_dir)
    text = re.sub(r"\s+", " ", args.prefix)
    ids = encode(text, vocab)
    model = load_model(cfg, run_dir, len(vocab), window)  # torch loads here, after the checks above
    top, continuation = complete(model, ids, window, args.top, args.chars, args.temperature, args.seed)
    shown = text if len(text) <= 60 else "..." + text[-57:]
    out = [f"after {shown!r}, the next character:"]
    out += [f"  {vocab[i]!r:>5}  {p:.3f}" for i, p in top]
    how = (
        "greedy"
        if args.temperature == 0
        else f"sampled at temperature {args.temperature:g}, seed {args.seed}"
    )
    out.append(f"completion ({how}, {args.chars} characters):")
    out.append(text + "".join(vocab[i] for i in continuation))
    for line in out:  # soft_wrap and no markup: typed text is printed as it is
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def vocabulary(cfg: RunConfig, run_dir: Path) -> tuple[str, int]:
    """The characters the model's classes stand for, in index order, and its window length."""
    from shoal.config import DatasetName

    d = cfg.data
    if d.dataset is DatasetName.SHAKESPEARE:
        from shoal.data.shakespeare import SEQ_LEN, VOCAB

        vocab, window = VOCAB, d.input_shape[0] if d.input_shape else SEQ_LEN
    elif d.classes and all(len(c) == 1 for c in d.classes) and d.input_shape and len(d.input_shape) == 1:
        vocab, window = "".join(d.classes), d.input_shape[0]
    else:
        raise ShoalError(
            f"shoal predict completes text with a next-character model, but {run_dir} was trained on "
            f"data.dataset = {label(d.dataset)!r} (model {label(cfg.model.name)!r}), whose classes are "
            'not characters: train one on dataset = "shakespeare" (examples/keyboard.toml), or give '
            "your text dataset its characters in index order as data.classes and its window as "
            "data.input_shape = [length]"
        )
    if d.num_classes is not None and d.num_classes != len(vocab):
        raise ShoalError(
            f"{run_dir}'s data.num_classes is {d.num_classes} but its vocabulary has {len(vocab)} "
            "characters; the model's classes are not this vocabulary"
        )
    return vocab, window


def encode(text: str, vocab: str) -> list[int]:
    """``text`` as the model's input ids; every character must be in ``vocab``."""
    if not text:
        raise ShoalError("the prefix is empty; type at least one character to complete")
    unknown = sorted(set(text) - set(vocab))
    if unknown:
        raise ShoalError(
            f"the prefix holds characters the model never saw: {''.join(unknown)!r}; it knows only {vocab!r}"
        )
    index = {c: i for i, c in enumerate(vocab)}
    return [index[c] for c in text]


def load_model(cfg: RunConfig, run_dir: Path, num_classes: int, window: int) -> nn.Module:
    """The run's model, rebuilt from its config, with the final weights of ``model.safetensors``."""
    from shoal import experiment
    from shoal.data.datasets import ServerData
    from shoal.params import ParamSpec, load_params, to_module

    path = run_dir / "model.safetensors"
    if not path.is_file():
        raise ShoalError(
            f"{run_dir} has no model.safetensors: the run has not finished (continue it with "
            f"shoal run --resume {run_dir}) or was never started"
        )
    shapes = ServerData(label(cfg.data.dataset), num_classes, (window,))
    model = experiment.model_factory(cfg, shapes)()
    spec = ParamSpec.from_module(model)
    to_module(load_params(path, spec), spec, model)
    return model.eval()


def complete(
    model: nn.Module,
    ids: list[int],
    window: int,
    top: int,
    chars: int,
    temperature: float,
    seed: int,
) -> tuple[list[tuple[int, float]], list[int]]:
    """The ``top`` most likely next ids with their probabilities, and ``chars`` more ids
    continuing ``ids`` (greedy at temperature 0, else sampled with ``seed``)."""
    import torch

    from shoal.models import CharLSTM

    gen = torch.Generator().manual_seed(seed)
    recurrent = isinstance(model, CharLSTM)  # any length; other models take exactly `window` ids
    if not recurrent and len(ids) < window:
        raise ShoalError(f"this model reads exactly {window} characters; type at least that many")

    def next_probs(text: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = model(torch.tensor([text[-window:]], dtype=torch.int64))  # [1, vocab]
        return torch.softmax(logits[0].double(), dim=0)

    probs = next_probs(ids)
    p, i = torch.topk(probs, min(top, len(probs)))
    best = [(int(a), float(b)) for a, b in zip(i, p, strict=True)]
    text = list(ids)
    for _ in range(chars):
        if temperature == 0:
            text.append(int(torch.argmax(probs)))
        else:
            tempered = torch.softmax(torch.log(probs) / temperature, dim=0)
            text.append(int(torch.multinomial(tempered, 1, generator=gen)))
        probs = next_probs(text)
    return best, text[len(ids) :]


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {n}")
        return n

    return parse


def _temperature(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (t >= 0 and math.isfinite(t)):
        raise argparse.ArgumentTypeError(f"expected a temperature >= 0, got {text}")
    return t
