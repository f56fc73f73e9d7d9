"""Personal layers: FedPer, FedRep and FedBN keep some of the model's layers on the device.

The device starts each round from the global model with its own copy of those layers put
back, trains, keeps the new copy in its state and zeroes their coordinates of the update,
so no message it sends holds them (tested on the encoded bytes). The server needs no
change: the weighted mean of zeros is zero, and so is every robust rule's, so the global
copy of the personal layers stays as it was initialized.

Which layers: FedPer and FedRep take glob patterns over parameter names
(``personal_layers``), by default the model's last layer, the head; FedBN takes every
batch-norm layer, found by its ``running_mean`` buffer (weights and running statistics
both stay, as in Li et al. 2021).
"""

from __future__ import annotations

import functools
import math
from fnmatch import fnmatch
from typing import ClassVar

import numpy as np

from shoal.client.algorithm import ClientOutput, Local, LocalModel, LocalRun, register
from shoal.client.state import ClientState
from shoal.config.names import PersonalizationName
from shoal.data.datasets import ClientData
from shoal.messages import EvalTask, TrainTask
from shoal.params import ParamSpec
from shoal.personal.base import PersonalMethod, own_seed, settings

KEY = "personal/layers"  # the client's own values of its personal coordinates, in order


@functools.lru_cache(maxsize=16)
def personal_names(
    spec: ParamSpec, method: PersonalizationName, patterns: tuple[str, ...]
) -> tuple[str, ...]:
    """The names of the tensors that stay on the device."""
    names = spec.names
    if method is PersonalizationName.FEDBN:
        norms = {n.removesuffix(".running_mean") for n in names if n.endswith(".running_mean")}
        chosen = tuple(n for n in names if n.rpartition(".")[0] in norms)
        if not chosen:
            raise ValueError(
                "fedbn keeps batch-norm layers on the device, but this model has none; use a model "
                "with BatchNorm (model.name = 'cnn_bn') or method = 'fedper'"
            )
    elif patterns:
        chosen = tuple(n for n in names if any(fnmatch(n, p) for p in patterns))
        if not chosen:
            raise ValueError(
                f"personalization.personal_layers {list(patterns)} match no parameter; the model's "
                f"are {', '.join(names)}"
            )
    else:  # the head: every tensor of the last layer
        last = names[-1].rpartition(".")[0]
        chosen = tuple(n for n in names if n.rpartition(".")[0] == last)
    if len(chosen) == len(names):
        raise ValueError("every parameter would stay on the device and nothing would be shared")
    return chosen


@functools.lru_cache(maxsize=16)
def personal_mask(spec: ParamSpec, names: tuple[str, ...]) -> np.ndarray:
    """A read-only boolean vector over the flat model: True on the personal coordinates."""
    mask = np.zeros(spec.num_params, dtype=bool)
    for name, off, size in zip(spec.names, spec.offsets, spec.sizes, strict=True):
        if name in names:
            mask[off : off + size] = True
    mask.flags.writeable = False
    return mask


def _layout(run: LocalRun, method: PersonalizationName) -> tuple[tuple[str, ...], np.ndarray]:
    if run.spec is None:
        raise ValueError(f"{method.value} needs the model's layout, which this trainer does not give")
    names = personal_names(run.spec, method, settings(run.trainer).personal_layers)
    return names, personal_mask(run.spec, names)


def overlay(params: np.ndarray, state: ClientState, mask: np.ndarray) -> np.ndarray:
    """``params`` with the client's own personal coordinates, if it has them yet."""
    own = state.get(KEY)
    if own is None:
        return params
    if own.shape != (int(mask.sum()),):
        raise ValueError(
            f"this client's personal layers hold {own.size} values but the model's take {int(mask.sum())}: "
            "the model changed since it trained; delete its state to start afresh"
        )
    out = params.copy()
    out[mask] = own
    return out


class PersonalLayers(PersonalMethod):
    """FedPer: the body is shared, the head stays; both train together on the device."""

    name: ClassVar[str] = "fedper"
    method: ClassVar[PersonalizationName] = PersonalizationName.FEDPER

    def start(self, task: TrainTask, state: ClientState, params: np.ndarray, run: LocalRun) -> np.ndarray:
        return overlay(params, state, _layout(run, self.method)[1])

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        mask = _layout(run, self.method)[1]
        state[KEY] = (task.params[mask] + delta[mask]).astype(np.float32)  # where training ended
        delta[mask] = 0.0  # the personal layers never leave the device
        return ClientOutput()

    def personal_weights(
        self, task: EvalTask, state: ClientState, data: ClientData, run: LocalRun, model: LocalModel
    ) -> np.ndarray | None:
        if settings(run.trainer).method is not self.method:
            return None
        return overlay(task.params, state, _layout(run, self.method)[1])


class FedBN(PersonalLayers):
    """FedBN: batch-norm layers stay on the device; everything else is FedAvg's."""

    name: ClassVar[str] = "fedbn"
    method: ClassVar[PersonalizationName] = PersonalizationName.FEDBN


class FedRep(PersonalLayers):
    """FedRep: each round the head trains first, body frozen, for ``head_epochs``; then the
    body, head frozen, for the round's steps (Collins et al. 2021, Algorithm 1)."""

    name: ClassVar[str] = "fedrep"
    method: ClassVar[PersonalizationName] = PersonalizationName.FEDREP

    def cohort_unsupported(self) -> str | None:
        return "FedRep trains the head and the body in turns, client by client"

    def local_loop(self) -> FedRep:
        return self

    def __call__(self, local: Local) -> tuple[float, int]:
        head = frozenset(_layout(local.run, self.method)[0])
        body = frozenset(name for name, _ in local.model.module.named_parameters()) - head
        run, task = local.run, local.task
        head_steps = settings(run.trainer).head_epochs * math.ceil(len(local.data) / run.batch_size)
        seed = own_seed(task.seed, task.round, task.client_id, "fedrep-head")
        local.model.fit(local.start, local.data, head_steps, seed, frozen=body)
        return local.model.fit(
            local.model.weights(), local.data, run.steps, task.seed,
            term=local.term, anchor=task.params, frozen=head,
        )  # fmt: skip


register(PersonalLayers())
register(FedBN())
register(FedRep())
