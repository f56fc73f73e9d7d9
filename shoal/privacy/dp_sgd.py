"""Example-level DP on the device: DP-SGD (Abadi et al. 2016) through Opacus.

Each local step samples a Poisson batch (every example joins with probability q = B/n),
Opacus computes per-example gradients, clips each to ``max_grad_norm``, adds Gaussian
noise of standard deviation ``z * max_grad_norm`` to their sum and divides by B. The
guarantee is per example of this client's data, for all the steps the client has ever
taken: the step count lives in the client's own state, and epsilon (RDP, dp-accounting)
comes back in the result's ``example_epsilon`` metric. Combine it with central or local
DP for a client-level guarantee as well.

Noise: Opacus' ``secure_mode`` needs ``torchcsprng``, which has no build for current torch;
so the noise comes from a torch generator seeded with 64 bits of ``os.urandom`` per task
(``noise = "seeded"``: from the task seed instead, reproducible, experiments only). The
Poisson batches come from ``os.urandom`` too: amplification by sampling assumes nobody
knows which examples a step used, and the task seed is derived from the public run seed.

DP-SGD is a client algorithm (:mod:`shoal.client.algorithm`): the trainer's
``dp_sgd_noise_multiplier`` turns it on, and it replaces the trainer's minibatch loop.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant
from torch import nn

from shoal.client.algorithm import ClientAlgorithm, ClientOutput, Local, LocalRun, register
from shoal.client.state import ClientState
from shoal.data.datasets import ArrayDataset
from shoal.messages import TrainTask
from shoal.rng import NoiseName, secret_seed

STEPS = "dp_sgd_steps"  # in the client's state: local DP-SGD steps taken so far, all rounds


def example_epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    if steps == 0:
        return 0.0
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(
        dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(noise_multiplier)), steps
    )
    return float(acc.get_epsilon(delta))


class DPSGDRunner:
    """Owns the Opacus wrapper of one module (hooks are installed once per process)."""

    def __init__(self, module: nn.Module) -> None:
        from opacus import GradSampleModule
        from opacus.validators import ModuleValidator

        problems = ModuleValidator.validate(module, strict=False)
        if problems:
            raise ValueError(f"DP-SGD cannot compute per-example gradients for this model: {problems}")
        self.module = module
        self.sampler = GradSampleModule(module)

    def train(
        self,
        data: ArrayDataset,
        optimizer: torch.optim.Optimizer,
        steps: int,
        batch_size: int,
        noise_multiplier: float,
        max_grad_norm: float,
        noise: NoiseName,
        seed: int,
    ) -> tuple[float, int]:
        """``steps`` DP-SGD steps; returns the loss sum and the number of examples used."""
        from opacus.optimizers import DPOptimizer

        n = len(data)
        q = min(1.0, batch_size / n)
        seeded = noise is NoiseName.SEEDED
        noise_gen = torch.Generator().manual_seed(seed if seeded else secret_seed())
        dp_opt = DPOptimizer(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=batch_size,
            generator=noise_gen,
        )
        order = torch.Generator().manual_seed(seed if seeded else secret_seed())
        loss_sum, seen = 0.0, 0
        self.sampler.train()
        for _ in range(steps):
            idx = torch.nonzero(torch.rand(n, generator=order) < q).squeeze(1)
            dp_opt.zero_grad(set_to_none=True)
            out = self.sampler(data.x.index_select(0, idx))
            # mean over the batch; an empty batch (possible under Poisson sampling) still takes
            # its noisy step, with a zero loss rather than the NaN of an empty mean
            loss = F.cross_entropy(out, data.y.index_select(0, idx), reduction="sum") / max(len(idx), 1)
            with warnings.catch_warnings():  # Opacus' hooks fire on outputs: the data needs no gradient
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()  # type: ignore[no-untyped-call]
            dp_opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            seen += len(idx)
        return loss_sum, seen


def count_steps(state: ClientState, steps: int) -> int:
    """Add this round's steps to the client's running total; return the total."""
    total = int(state.get(STEPS, np.zeros(1, np.int64))[0]) + steps
    state[STEPS] = np.array([total], dtype=np.int64)
    return total


class DPSGD(ClientAlgorithm):
    """The client hook: on when the trainer sets ``dp_sgd_noise_multiplier``."""

    name = "dp_sgd"
    metric_reducers: ClassVar[Mapping[str, str]] = {"example_epsilon": "max"}  # the least private client

    def __init__(self) -> None:
        # one Opacus wrapper per module, installed once per process
        self._runners: weakref.WeakKeyDictionary[nn.Module, DPSGDRunner] = weakref.WeakKeyDictionary()

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return getattr(run.trainer, "dp_sgd_noise_multiplier", None) is not None

    def check(self, run: LocalRun, others: Sequence[str]) -> None:
        terms = [o for o in others if o != "fednova"]
        if terms:
            raise ValueError(
                f"DP-SGD does not combine with {', '.join(terms)}: its guarantee covers its own loop only"
            )

    def cohort_unsupported(self) -> str | None:
        return "DP-SGD runs client by client through Opacus"

    def local_loop(self) -> DPSGD:
        return self

    def __call__(self, local: Local) -> tuple[float, int]:
        module, run = local.model.module, local.run
        runner = self._runners.get(module)
        if runner is None:
            runner = self._runners[module] = DPSGDRunner(module)
        hp = run.trainer
        return runner.train(
            local.data, local.model.optimizer(), run.steps, run.batch_size, hp.dp_sgd_noise_multiplier,
            hp.dp_sgd_max_grad_norm, hp.dp_sgd_noise, local.task.seed,
        )  # fmt: skip

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        total = count_steps(state, run.steps)
        rate = min(1.0, run.batch_size / max(run.num_examples, 1))
        hp = run.trainer
        eps = example_epsilon(rate, hp.dp_sgd_noise_multiplier, total, hp.dp_sgd_delta)
        return ClientOutput(metrics={"example_epsilon": eps})


register(DPSGD())
