"""Client-side algorithms as plug-ins: one hook, owned by each algorithm in its own file.

Many federated algorithms change what a device does, not only what the server does:
FedProx adds a proximal term to every local gradient, SCAFFOLD a control-variate
correction, FedDyn a dynamic regularizer, FedNova reports how far its local steps
reach, DP-SGD replaces the minibatch step itself. Each is a :class:`ClientAlgorithm`
that lives beside its server half (``shoal/strategy/scaffold.py``,
``shoal/privacy/dp_sgd.py``, ...) and registers itself with :func:`register`. The
trainers (one client at a time, and the vectorized cohorts) ask :func:`active_for`
which algorithms a task turns on and apply their hooks; they name none of them.

Every hook has a no-op default, so an algorithm implements only what it changes:

- ``active(task, run)``: does this task ask for it (a key it owns in ``task.config`` or
  ``task.arrays``, or a trainer setting)?
- ``check(run, others)``: refuse a combination it cannot run correctly (ValueError),
  e.g. SCAFFOLD's control update under momentum.
- ``gradient_term(task, state, run)``: a per-step term added to every local gradient.
  It is affine, ``(coef + diag) * (w - w_global) + shift``, so the one-by-one and the cohort
  paths apply exactly the same term (a cohort stacks K coefficients and K shifts).
- ``start(task, state, params, run)``: the weights local training starts from (personal
  layers put back over the global model's).
- ``local_loop()``: replaces the minibatch loop (DP-SGD's per-example clipping; FedRep's
  turns, Ditto's and APFL's second model, which train through the trainer's ``fit``).
- ``local_data(task, data, run, classes, state, module)``: the data the device trains on
  (a hostile device's label flipping or backdoor trigger, replay's remembered examples).
- ``finish(task, state, delta, run)``: what it adds to the result's payload and
  metrics, and what it keeps in the client's state (changed in place; the runtime
  commits it only when the server counts the result). It may zero coordinates of
  ``delta`` in place (personal layers never leave the device).
- ``personal_weights(task, state, data, run, model)``: the weights federated evaluation
  scores for this client, when it has a model of its own.
- ``cohort_unsupported()``: why the vectorized path cannot run it (None: it can).
- ``metric_reducers``: how the round loop folds the metrics it reports (see
  :mod:`shoal.metrics`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from shoal.client.state import ClientState
from shoal.data.datasets import ArrayDataset, ClientData
from shoal.messages import EvalTask, Scalar, TrainTask
from shoal.metrics import declare
from shoal.params import ParamSpec


@dataclass(frozen=True)
class LocalRun:
    """What the device is about to do for a task (known before training starts)."""

    steps: int  # local minibatch steps
    lr: float
    batch_size: int
    num_examples: int
    optimizer: str  # "sgd" or "adam"
    momentum: float
    trainer: Any = None  # the trainer's own settings (e.g. DP-SGD's noise multiplier)
    spec: ParamSpec | None = None  # the model's layout, for algorithms that treat layers apart


@dataclass(frozen=True)
class GradientTerm:
    """``(coef + diag) * (w - w_global) + shift``, added to the loss gradient at every local step.

    ``w_global`` is the task's model; ``shift`` and ``diag`` flat float32 vectors of the
    model's size (None: zero). FedProx's term is ``coef = mu``; SCAFFOLD's ``c - c_i`` is the
    shift; FedDyn has both; EWC's ``lambda F (w - w_old)`` is a per-coordinate ``diag`` with
    the shift ``lambda F (w_global - w_old)``. Terms add: coefficients, diagonals and shifts sum."""

    coef: float = 0.0
    shift: np.ndarray | None = None
    diag: np.ndarray | None = None

    def __add__(self, other: GradientTerm) -> GradientTerm:
        return GradientTerm(
            self.coef + other.coef, _add(self.shift, other.shift), _add(self.diag, other.diag)
        )


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return a if b is None else b
    total: np.ndarray = a + b
    return total


@dataclass
class ClientOutput:
    """What an algorithm adds to a result."""

    payload: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Scalar] = field(default_factory=dict)


class LocalModel(Protocol):
    """What a replaced loop may ask of the trainer: its module, a fresh optimizer over it,
    and ``fit``, the trainer's own minibatch loop from any starting weights (a personal
    model trains the way the shared one does)."""

    module: nn.Module

    def optimizer(self) -> torch.optim.Optimizer: ...

    def weights(self) -> np.ndarray:
        """A copy of the module's weights as one flat vector."""
        ...

    def fit(
        self,
        start: np.ndarray,
        data: ArrayDataset,
        steps: int,
        seed: int,
        *,
        term: GradientTerm | None = None,
        anchor: np.ndarray | None = None,
        prox: float = 0.0,
        frozen: frozenset[str] = frozenset(),
    ) -> tuple[float, int]:
        """``steps`` minibatch steps from ``start``, leaving the weights in the module;
        ``term`` is taken about ``anchor``, ``prox`` pulls toward ``anchor`` after each step
        (in closed form: ``w <- (w + lr prox anchor) / (1 + lr prox)``), parameters named in
        ``frozen`` do not move. Returns the summed loss and the examples seen."""
        ...


@dataclass(frozen=True)
class Local:
    """A replaced loop's inputs: it trains ``model.module`` and leaves the weights whose
    difference from ``task.params`` is the update there."""

    task: TrainTask
    state: ClientState  # the client's working state, changed in place
    data: ArrayDataset
    run: LocalRun
    term: GradientTerm | None  # the other algorithms' per-step terms
    start: np.ndarray  # the weights the start hooks chose
    model: LocalModel


class LocalLoop(Protocol):
    """A replacement for the trainer's minibatch loop; returns the summed loss and the
    number of examples it used."""

    def __call__(self, local: Local) -> tuple[float, int]: ...


class ClientAlgorithm:
    """Base of every client-side algorithm; each hook's default changes nothing."""

    name: ClassVar[str] = ""
    metric_reducers: ClassVar[Mapping[str, str]] = {}  # metric key -> reducer name

    def active(self, task: TrainTask, run: LocalRun) -> bool:
        return False

    def check(self, run: LocalRun, others: Sequence[str]) -> None:
        """Raise ValueError when this algorithm cannot run with these settings or ``others``."""

    def gradient_term(self, task: TrainTask, state: ClientState, run: LocalRun) -> GradientTerm | None:
        return None

    def start(self, task: TrainTask, state: ClientState, params: np.ndarray, run: LocalRun) -> np.ndarray:
        """The weights training starts from (a new array if changed; ``params`` is read-only)."""
        return params

    def local_loop(self) -> LocalLoop | None:
        return None

    def local_data(
        self,
        task: TrainTask,
        data: ClientData,
        run: LocalRun,
        classes: Callable[[], int],
        state: ClientState,
        module: nn.Module,
    ) -> ClientData:
        """The data the device trains on (data poisoning rewrites it, replay adds to it);
        ``classes()`` gives the model's number of outputs, computed only if asked. ``state``
        is the client's working state (changed in place, kept on ``finish``'s terms);
        ``module`` is the trainer's, not at the task's weights: evaluate it with
        ``torch.func.functional_call`` at the weights meant (EWC's Fisher)."""
        return data

    def finish(self, task: TrainTask, state: ClientState, delta: np.ndarray, run: LocalRun) -> ClientOutput:
        return ClientOutput()

    def personal_weights(
        self, task: EvalTask, state: ClientState, data: ClientData, run: LocalRun, model: LocalModel
    ) -> np.ndarray | None:
        """The weights this client's evaluation scores (None: not this algorithm's business)."""
        return None

    def cohort_unsupported(self) -> str | None:
        return None


_REGISTRY: dict[str, ClientAlgorithm] = {}
# Each built-in registers itself beside its server half; loading them here on first use
# means no trainer or metric fold depends on which of those modules was imported first.
_BUILTINS = (
    "shoal.strategy.fedprox",
    "shoal.strategy.scaffold",
    "shoal.strategy.fednova",
    "shoal.strategy.feddyn",
    "shoal.privacy.dp_sgd",
    "shoal.personal",  # personalization: before the attacks, which may rewrite a whole update
    "shoal.continual.ewc",  # its Fisher on the device's own data, before replay mixes the past in
    "shoal.continual.replay",
    "shoal.attacks.poison",  # hostile devices (evaluation only), after replay: they poison it too
)
_loaded = False


def load_builtins() -> None:
    """Register the built-in client algorithms (FedProx, SCAFFOLD, FedNova, FedDyn, DP-SGD,
    personalization, replay and EWC, hostile devices)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTINS:
            importlib.import_module(module)


def register(algorithm: ClientAlgorithm) -> ClientAlgorithm:
    """Make ``algorithm`` available to every trainer (a name registered twice is replaced)."""
    if not algorithm.name:
        raise ValueError(f"{type(algorithm).__name__} needs a name to register")
    _REGISTRY[algorithm.name] = algorithm
    # the round loop folds what the algorithm reports with the reducers it declares
    for key, reducer in algorithm.metric_reducers.items():
        declare(key, reducer)
    return algorithm


def registered() -> list[ClientAlgorithm]:
    load_builtins()
    return list(_REGISTRY.values())


def active_for(task: TrainTask, run: LocalRun) -> list[ClientAlgorithm]:
    """The algorithms ``task`` turns on, each checked against the others."""
    chosen = [a for a in registered() if a.active(task, run)]
    names = [a.name for a in chosen]
    for a in chosen:
        a.check(run, [n for n in names if n != a.name])
    return chosen


def combined_term(
    algorithms: Sequence[ClientAlgorithm], task: TrainTask, state: ClientState, run: LocalRun
) -> GradientTerm | None:
    terms = [t for a in algorithms if (t := a.gradient_term(task, state, run)) is not None]
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def local_data(
    algorithms: Sequence[ClientAlgorithm],
    task: TrainTask,
    data: ClientData,
    run: LocalRun,
    module: nn.Module,
    state: ClientState,
) -> ClientData:
    """The data after every algorithm's ``local_data`` hook, in order."""

    def classes() -> int:
        was = module.training
        module.eval()
        with torch.no_grad():
            width = int(module(data.train.x[:1]).shape[-1])
        module.train(was)
        return width

    for a in algorithms:
        data = a.local_data(task, data, run, classes, state, module)
    return data


def start_params(
    algorithms: Sequence[ClientAlgorithm], task: TrainTask, state: ClientState, run: LocalRun
) -> np.ndarray:
    """Where local training starts: ``task.params`` through every ``start`` hook, in order."""
    params = task.params
    for a in algorithms:
        params = a.start(task, state, params, run)
    return params


def personal_weights(
    task: EvalTask, state: ClientState, data: ClientData, run: LocalRun, model: LocalModel
) -> np.ndarray | None:
    """The client's own model for evaluation, from the first algorithm that has one."""
    for a in registered():
        if (weights := a.personal_weights(task, state, data, run, model)) is not None:
            return weights
    return None


def local_loop(algorithms: Sequence[ClientAlgorithm]) -> LocalLoop | None:
    loops = [loop for a in algorithms if (loop := a.local_loop()) is not None]
    if len(loops) > 1:
        raise ValueError(f"only one algorithm may replace the local loop; {len(loops)} do")
    return loops[0] if loops else None


def finish_all(
    algorithms: Sequence[ClientAlgorithm],
    task: TrainTask,
    state: ClientState,
    delta: np.ndarray,
    run: LocalRun,
) -> ClientOutput:
    out = ClientOutput()
    for a in algorithms:
        more = a.finish(task, state, delta, run)
        out.payload.update(more.payload)
        out.metrics.update(more.metrics)
    return out
