"""The round loop: configure -> run clients -> server transforms -> aggregate -> evaluate -> record.

The loop never knows where clients run (that is the backend's business) nor what the
server algorithm is (the strategy's). It owns the global weights, validation of what
comes back, evaluation, metrics, checkpoints and resume.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from shoal.client.app import AppBuilder
from shoal.client.hparams import TorchTrainer
from shoal.client.trainer import evaluate_module, score_module
from shoal.data.datasets import FederatedDataset, ServerData
from shoal.errors import ConfigError, RoundAbortedError, SpecMismatchError
from shoal.messages import (
    EvalResult,
    EvalTask,
    Failure,
    FailureKind,
    TrainResult,
    TrainTask,
    encoded_size,
)
from shoal.metrics import add_to_record, reduce_metrics
from shoal.models import ModelFactory
from shoal.params import FlatModule, ParamSpec, check_vector, from_module, model_hash, save_params
from shoal.rng import Stream
from shoal.runtime.backend import Backend, InProcessBackend
from shoal.runtime.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from shoal.runtime.history import History, MetricsLog, Record
from shoal.runtime.validation import ResultLimits, check_claims, check_eval, check_payload, norm_refusal
from shoal.scores import is_metric
from shoal.strategy.base import RoundContext, Strategy
from shoal.transforms.base import TransformContext, UpdateTransform, apply_server, clients_in
from shoal.transforms.downlink import codec_for, compress_tasks

Callback = Callable[[Record], None]
StopCondition = Callable[[Record], bool]


def initial_params(model: ModelFactory, seed: int) -> tuple[np.ndarray, ParamSpec]:
    """The model's initial weights, drawn from ``seed`` without touching global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return from_module(model())


def _rejected(result: TrainResult, reason: str) -> Failure:
    return Failure(result.round, result.client_id, FailureKind.REJECTED, reason)


def federated_eval_record(results: Sequence[EvalResult]) -> Record:
    """What federated evaluation reports: the example-weighted loss and accuracy, and how
    accuracy spreads over clients (mean, 10th percentile, worst), which a personalized
    model is judged by. Clients that personalize also report the global model's accuracy."""
    if not sum(o.num_examples for o in results):
        return {"fed_eval_clients": 0}
    acc = np.array([float(o.metrics["accuracy"]) for o in results])
    record: Record = {
        "fed_eval_loss": _weighted(results, "loss"),
        "fed_eval_accuracy": _weighted(results, "accuracy"),
        "fed_eval_clients": len(results),
        "fed_eval_client_mean": float(acc.mean()),
        "fed_eval_client_p10": float(np.percentile(acc, 10)),
        "fed_eval_client_min": float(acc.min()),
    }
    if scored := [o for o in results if "global_accuracy" in o.metrics]:
        record["fed_eval_global_accuracy"] = _weighted(scored, "global_accuracy")
        g = [float(o.metrics["global_accuracy"]) for o in scored]
        record["fed_eval_global_client_p10"] = float(np.percentile(g, 10))
    # [eval] metrics, over the devices whose holdout defines them (no fraud, no PR-AUC)
    named = sorted({k for o in results for k in o.metrics if is_metric(k.removeprefix("global_"))})
    for key in named:
        record[f"fed_eval_{key}"] = _weighted([o for o in results if key in o.metrics], key)
    return record


def _weighted(results: Sequence[EvalResult], key: str) -> float:
    """The example-weighted mean of one metric."""
    return sum(float(o.metrics[key]) * o.num_examples for o in results) / sum(o.num_examples for o in results)


class Simulation:
    """One federated run; :func:`simulate` is the short way to make and run one."""

    def __init__(
        self,
        model: ModelFactory,
        data: FederatedDataset | ServerData,
        strategy: Strategy,
        trainer: AppBuilder | None = None,
        *,
        seed: int = 0,
        transforms: Sequence[UpdateTransform] = (),
        backend: Backend | None = None,
        eval_every: int = 1,
        federated_eval_every: int = 0,
        federated_eval_clients: int = 10,
        out_dir: str | Path | None = None,
        params: np.ndarray | None = None,
        limits: ResultLimits | None = None,
        downlink: str | None = None,
        metrics: Sequence[str] = (),
    ) -> None:
        if eval_every < 0 or federated_eval_every < 0 or federated_eval_clients < 1:
            raise ConfigError("eval_every and federated_eval_every must be >= 0, federated_eval_clients >= 1")
        self.data, self.strategy, self.seed = data, strategy, seed
        if limits is None:  # no client may claim more examples than the largest one holds
            if isinstance(data, ServerData):
                raise ConfigError("a deployed server needs explicit result limits (max_num_examples)")
            limits = ResultLimits(max_num_examples=max(max(data.sizes().values()), 1))
        self.limits = limits
        self.transforms = list(transforms)
        if downlink is not None:
            codec_for(downlink)  # an unknown codec is refused now, not mid-run
        self.downlink = downlink  # how the model travels to devices (None: float32)
        # DP's amplification by sampling assumes nobody can tell who was picked
        self.secret_selection = any(t.secret_sampling() for t in self.transforms)
        self.eval_every, self.fed_every, self.fed_clients = (
            eval_every,
            federated_eval_every,
            federated_eval_clients,
        )
        self.metrics = tuple(metrics)  # [eval] metrics on the server's test set (devices: in their app)
        # the last federated evaluation, client by client: a use case's per-site figures
        self.client_scores: dict[str, dict[str, float]] = {}
        self.params, self.spec = initial_params(model, seed)
        if params is not None:
            check_vector(params, self.spec, "initial params")
            self.params = params.copy()
        if backend is None:
            if isinstance(data, ServerData):
                raise ConfigError("a deployed server's clients are remote: pass the network backend")
            backend = InProcessBackend(trainer or TorchTrainer(), model, data, transforms, seed)
        self.backend = backend
        self._tests = data.test_sets() if isinstance(data, FederatedDataset) else {}
        self._server = FlatModule(model()) if data.test is not None or self._tests else None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = MetricsLog(self.out_dir / "metrics.jsonl") if self.out_dir else None
        self.records: list[Record] = []
        self.initial: Record = {}  # measured before round 1 (a pretrained start's accuracy)
        self.round = 0  # last completed round
        self.stopped: str | None = None  # why run() ended before its last round, if it did

    # -- persistence ---------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the output folder's checkpoint, dropping anything logged after it."""
        if self.out_dir is None or self.log is None:
            raise ConfigError("resume needs out_dir, the folder of the interrupted run")
        ckpt = load_checkpoint(self.out_dir / "checkpoint.safetensors")
        if ckpt.spec != self.spec:
            raise SpecMismatchError("the checkpoint's model differs from this run's model; same config?")
        self.params, self.round = ckpt.params.copy(), ckpt.round
        self.strategy.load_state_dict(ckpt.state["strategy"])
        for t, s in zip(self.transforms, ckpt.state["transforms"], strict=True):
            t.load_state_dict(s)
        self.backend.load_state_dict(ckpt.state.get("backend", {}))
        self.records = self.log.truncate(ckpt.round)

    def _checkpoint(self) -> None:
        if self.out_dir is None:
            return
        state = {
            "strategy": self.strategy.state_dict(),
            "transforms": [t.state_dict() for t in self.transforms],
            "backend": self.backend.state_dict(),
        }
        save_checkpoint(
            self.out_dir / "checkpoint.safetensors",
            Checkpoint(self.round, self.params, self.spec, state),
        )

    # -- one round -----------------------------------------------------------------------
    def _collect(
        self,
        tasks: Sequence[TrainTask],
        carried: Mapping[str, int],
        outcomes: Sequence[TrainResult | Failure],
        ctx: RoundContext,
        tctx: TransformContext,
        record: Record,
        client_metrics: dict[str, float],
    ) -> tuple[list[TrainResult], list[Failure], set[str]]:
        """Keep results that answer a task of this round (or one still out from an earlier
        round: ``carried``), claim no more than a client may, and decode to usable vectors.
        Returns them, the failures, and the clients counted."""
        expected = {**carried, **{t.client_id: t.round for t in tasks}}
        results: list[TrainResult] = []
        failures = [o for o in outcomes if isinstance(o, Failure)]
        record["bytes_up"] = 0
        for o in outcomes:
            if not isinstance(o, TrainResult):
                continue
            try:  # what would travel: a result the wire cannot carry (a NaN metric) never arrives
                record["bytes_up"] += encoded_size(o)
            except ValueError as exc:
                failures.append(_rejected(o, f"result cannot be encoded: {exc}"))
                continue
            if expected.get(o.client_id) != o.round:
                failures.append(_rejected(o, "result for no task of this round"))
                continue
            del expected[o.client_id]  # a second answer from one client is refused
            if reason := check_claims(o, self.limits):
                failures.append(_rejected(o, reason))
            else:
                results.append(o)
        results, dropped = self.strategy.screen(ctx, results)
        failures += dropped
        counted = {r.client_id for r in results}
        # before the server transforms, which may merge the cohort into one result
        client_metrics.update(reduce_metrics(results))
        arrived = {id(r) for r in results}  # their norms were measured by check_claims
        decoded, rejected = apply_server(self.transforms, results, tctx)
        for t in self.transforms:
            record.update(t.round_metrics())
        failures += rejected
        valid = []
        # Every vector the strategy reads is checked here, so a strategy sees only sound input.
        for r in decoded:
            reason = check_payload(r, self.spec.num_params, self.strategy.payload_keys)
            if id(r) not in arrived:  # rewritten by a server half: decoded, or a merged cohort
                reason = reason or norm_refusal(r, self.limits.max_update_norm)
            if reason:
                failures.append(_rejected(r, reason))
            else:
                valid.append(r)
        return valid, failures, counted - {f.client_id for f in failures}

    def available(self) -> Sequence[str]:
        """The clients a round may pick: the backend's live devices, or every simulated client."""
        live = self.backend.available()
        if live is not None:
            return live
        assert isinstance(self.data, FederatedDataset), "a deployment's backend knows its devices"
        return self.data.client_ids

    def _transform_context(self, round: int, population: int) -> TransformContext:
        sampling = self.strategy.sampling_for(max(population, 1))
        return TransformContext(round, self.seed, self.spec.num_params, sampling)

    def stop_reason(self) -> str | None:
        """Why the next round must not run (a transform's spent budget), or None."""
        if isinstance(self.data, FederatedDataset):
            self.data.at_round(self.round + 1)  # the population the next round samples from
        ctx = self._transform_context(self.round + 1, len(self.available()))
        for t in self.transforms:
            if reason := t.stop_reason(ctx):
                return reason
        return None

    def _train(self, ctx: RoundContext, record: Record, client_metrics: dict[str, float]) -> None:
        carried = self.backend.in_flight()  # asynchronous rounds: sent earlier, still out
        ctx = dataclasses.replace(ctx, in_flight=carried)
        try:
            available = self.available()
            tasks = self.strategy.configure_train(ctx, self.params, available)
            if self.downlink is not None:  # what travels, and what bytes_down counts
                tasks = compress_tasks(tasks, self.downlink)
            tctx = self._transform_context(ctx.round, len(available))  # one per round
            for t in self.transforms:  # e.g. secure aggregation's key stages with this cohort
                t.begin_round(tctx, [task.client_id for task in tasks])
        except RoundAbortedError as exc:
            record.update(aborted=True, abort_reason=str(exc), clients_selected=0)
            return
        outcomes = self.backend.train(tasks)
        record.update(self.backend.round_metrics())
        results, failures, counted = self._collect(
            tasks, carried, outcomes, ctx, tctx, record, client_metrics
        )
        record.update(
            clients_selected=len(tasks),
            clients_completed=clients_in(results),
            clients_failed=len(failures),
            bytes_down=sum(encoded_size(t) for t in tasks),
            failures=[f"{f.client_id}: {f.kind.value}: {f.reason}" for f in failures[:5]],
        )
        try:
            new = self.strategy.aggregate_train(ctx, self.params, results, failures)
            check_vector(new, self.spec, "aggregated model")
            self.params = new
        except (RoundAbortedError, SpecMismatchError) as exc:
            record.update(aborted=True, abort_reason=str(exc))
            counted = set()  # a round that did not commit moves no client's state either
        self.backend.commit(counted)

    def test(self, params: np.ndarray) -> tuple[float, float] | None:
        """Loss and accuracy of ``params`` on the server's test set (None: it has none)."""
        if self._server is None or self.data.test is None:
            return None
        self._server.load(params)
        return evaluate_module(self._server.module, self.data.test)

    def _evaluate(self, r: int, last: int, record: Record) -> None:
        due = self.eval_every and (r % self.eval_every == 0 or r == last)
        if due and self._server is not None and self.data.test is not None:
            self._server.load(self.params)
            scored = score_module(self._server.module, self.data.test, self.metrics)
            record.update({f"test_{k}": v for k, v in scored.items()})
        if due and self._tests:  # named test sets: a drift's old and new data
            assert self._server is not None
            self._server.load(self.params)
            for name, data in self._tests.items():
                record[f"test_accuracy_{name}"] = evaluate_module(self._server.module, data)[1]
        if self.fed_every and (r % self.fed_every == 0 or r == last):
            record.update(self._federated_eval(r))

    def _federated_eval(self, r: int) -> Record:
        if isinstance(self.data, ServerData):  # only the devices know whether they hold a holdout
            holders = self.available()
        else:
            live = set(self.available())
            held = self.data.clients
            holders = [cid for cid, c in held.items() if cid in live and c.test is not None and len(c.test)]
        if not holders:
            raise ConfigError("federated evaluation needs client holdouts: set data.holdout_fraction > 0")
        rng = RoundContext(r, self.seed).rng(Stream.FEDERATED_EVAL)
        chosen = sorted(rng.choice(len(holders), size=min(self.fed_clients, len(holders)), replace=False))
        outs = self.backend.evaluate([EvalTask(r, holders[i], self.params) for i in chosen])
        # every answer is checked: a device's bad report costs its own score, not the round
        judged = [(o, check_eval(o)) for o in outs if isinstance(o, EvalResult)]
        counted = [o for o, why in judged if why is None]
        self.client_scores = {
            o.client_id: {k: float(v) for k, v in o.metrics.items() if isinstance(v, int | float)}
            for o in counted
        }
        record = federated_eval_record(counted)
        if refused := [f"{o.client_id}: {why}" for o, why in judged if why is not None]:
            record["fed_eval_refused"] = refused[:5]  # a device's report the server would not count
        return record

    def step(self, last: int) -> Record:
        """Run the next round and return its record."""
        r = self.round + 1
        if isinstance(self.data, FederatedDataset):
            self.data.at_round(r)  # drifting client data: before anything reads it
        start = time.perf_counter()
        record: Record = {"round": r, "aborted": False}
        client_metrics: dict[str, float] = {}
        self._train(RoundContext(r, self.seed, self.secret_selection), record, client_metrics)
        self._evaluate(r, last, record)
        record["wall_time"] = time.perf_counter() - start
        record["elapsed"] = (self.records[-1]["elapsed"] if self.records else 0.0) + record["wall_time"]
        add_to_record(record, client_metrics)  # last: a client's key never replaces the server's
        self.round = r
        self.records.append(record)
        if self.log is not None:
            self.log.append(record)
        self._checkpoint()
        return record

    def run(
        self,
        rounds: int,
        callbacks: Sequence[Callback] = (),
        stop_when: StopCondition | None = None,
    ) -> History:
        """Run until ``rounds`` rounds are complete (counting any done before a resume),
        or until ``stop_when(record)`` is true after a round (a target accuracy, a budget)."""
        if rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {rounds}")
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            while self.round < rounds:
                self.stopped = self.stop_reason()
                if self.stopped:
                    break
                record = self.step(rounds)
                for cb in callbacks:
                    cb(record)
                if stop_when is not None and stop_when(record):
                    break
            # Saved before the backend closes: closing tells network devices the run is over,
            # and a server killed between the two must not leave a finished run without its model.
            if self.out_dir is not None:
                save_params(
                    self.out_dir / "model.safetensors",
                    self.params,
                    self.spec,
                    {"model_hash": model_hash(self.params)},
                )
        finally:
            self.backend.close()
        if not any(not r["aborted"] for r in self.records):
            warnings.warn(self._why_nothing_trained(), RuntimeWarning, stacklevel=2)
        return History(list(self.records), self.params, self.spec, self.out_dir, stopped=self.stopped)

    def _why_nothing_trained(self) -> str:
        if not self.records:
            return f"no round ran: {self.stopped or 'the run was already complete'}"
        reasons = sorted({str(r.get("abort_reason", "?")) for r in self.records})
        return f"no round committed; the model is the initial one. Every round aborted: {'; '.join(reasons)}"


def simulate(
    model: ModelFactory,
    data: FederatedDataset,
    strategy: Strategy,
    trainer: AppBuilder | None = None,
    *,
    rounds: int,
    seed: int = 0,
    transforms: Sequence[UpdateTransform] = (),
    backend: Backend | None = None,
    eval_every: int = 1,
    federated_eval_every: int = 0,
    federated_eval_clients: int = 10,
    out_dir: str | Path | None = None,
    resume: bool = False,
    params: np.ndarray | None = None,
    limits: ResultLimits | None = None,
    downlink: str | None = None,
    callbacks: Sequence[Callback] = (),
    stop_when: StopCondition | None = None,
) -> History:
    """Train ``model`` on ``data`` with ``strategy`` for ``rounds`` rounds; return the History.

    Example::

        data = shoal.data.iid(shoal.data.digits(), num_clients=20, seed=0)
        model = lambda: shoal.models.mlp(data.input_shape, data.num_classes)
        history = shoal.simulate(model, data, shoal.FedAvg(clients_per_round=5), rounds=3)
        history.final_accuracy
    """
    sim = Simulation(
        model,
        data,
        strategy,
        trainer,
        seed=seed,
        transforms=transforms,
        backend=backend,
        eval_every=eval_every,
        federated_eval_every=federated_eval_every,
        federated_eval_clients=federated_eval_clients,
        out_dir=out_dir,
        params=params,
        limits=limits,
        downlink=downlink,
    )
    if resume:
        sim.resume()
    return sim.run(rounds, callbacks, stop_when)
