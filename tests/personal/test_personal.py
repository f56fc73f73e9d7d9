"""Personalization: each method against its paper's update rule, on real training."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import shoal
from shoal.client import Personalization, TorchTrainer
from shoal.client.algorithm import LocalRun
from shoal.config.names import PersonalizationName
from shoal.messages import EvalResult, EvalTask, TrainResult, TrainTask, encode
from shoal.models import cnn_bn, mlp
from shoal.params import ParamSpec
from shoal.personal import apfl, ditto, layers
from shoal.runtime import initial_params
from shoal.runtime.backend import InProcessBackend
from shoal.runtime.simulation import federated_eval_record
from shoal.runtime.validation import check_eval


def trainer(method: str | None, lr: float = 0.1, **settings) -> TorchTrainer:
    return TorchTrainer(
        lr=lr, local_epochs=1, batch_size=16, personalization=Personalization(method=method, **settings)
    )


def task(params: np.ndarray, client: str = "0", seed: int = 7) -> TrainTask:
    return TrainTask(1, client, params, seed=seed)


@pytest.fixture()
def setup(small_mlp, fed_digits):
    params, spec = initial_params(small_mlp, 0)
    return small_mlp, fed_digits["0"], params, spec


def head_mask(spec: ParamSpec, method=PersonalizationName.FEDPER, patterns=()) -> np.ndarray:
    return layers.personal_mask(spec, layers.personal_names(spec, method, patterns))


# -- personal layers -------------------------------------------------------------------------
class Recording(InProcessBackend):
    """Keeps every outcome a client sends."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[TrainResult] = []

    def train(self, tasks):
        out = super().train(tasks)
        self.sent += [o for o in out if isinstance(o, TrainResult)]
        return out


@pytest.mark.parametrize("method", ["fedper", "fedrep"])
def test_personal_layers_never_leave_the_device(small_mlp, fed_digits, method):
    backend = Recording(trainer(method), small_mlp, fed_digits, (), 0)
    start, spec = initial_params(small_mlp, 0)
    history = shoal.simulate(
        small_mlp, fed_digits, shoal.FedAvg(clients_per_round=5), rounds=3, backend=backend
    )
    mask = head_mask(spec)
    assert len(backend.sent) == 15
    for result in backend.sent:
        assert not result.payload["delta"][mask].any()  # zero on every personal coordinate
    # the values the devices keep appear in no message they sent, byte for byte
    wire = [encode(r) for r in backend.sent]
    for client in {r.client_id for r in backend.sent}:
        own = backend.client_states.get(client)[layers.KEY]
        assert own.shape == (int(mask.sum()),) and not np.allclose(own, start[mask])
        for row in np.split(own, [own.size // 2]):  # each half of the head, as it would lie in memory
            needle = row.astype("<f4").tobytes()
            assert all(needle not in message for message in wire)
    final = history.params
    assert np.array_equal(final[mask], start[mask])  # the server's copy never moved
    assert not np.array_equal(final[~mask], start[~mask])  # the shared body did


def test_training_starts_from_the_clients_own_layers(setup):
    model, data, params, spec = setup
    mask = head_mask(spec)
    own = np.random.default_rng(0).normal(size=int(mask.sum())).astype(np.float32)
    app = trainer("fedper", lr=1e-9).build(model)
    state = {layers.KEY: own.copy()}
    app.train(task(params), data, state)
    np.testing.assert_allclose(state[layers.KEY], own, atol=1e-6)  # trained from its own, not the global
    assert not np.allclose(params[mask], own)


def test_personal_layer_patterns(setup):
    _, _, _, spec = setup
    assert layers.personal_names(spec, PersonalizationName.FEDPER, ()) == ("3.weight", "3.bias")
    assert layers.personal_names(spec, PersonalizationName.FEDPER, ("1.*",)) == ("1.weight", "1.bias")
    with pytest.raises(ValueError, match="match no parameter"):
        layers.personal_names(spec, PersonalizationName.FEDPER, ("head.*",))
    with pytest.raises(ValueError, match="nothing would be shared"):
        layers.personal_names(spec, PersonalizationName.FEDPER, ("*",))
    with pytest.raises(ValueError, match="batch-norm"):
        layers.personal_names(spec, PersonalizationName.FEDBN, ())


def test_fedrep_trains_the_head_then_the_body(setup):
    """Collins et al. 2021, Algorithm 1: head_epochs on the head with the body frozen, then the
    round's steps on the body with the head frozen; checked against the two phases by hand."""
    model, data, params, spec = setup
    hp = trainer("fedrep", head_epochs=2)
    app = hp.build(model)
    state: dict[str, np.ndarray] = {}
    result = app.train(task(params), data, state)
    mask = head_mask(spec)
    head = frozenset(layers.personal_names(spec, PersonalizationName.FEDREP, ()))
    body = frozenset(spec.names) - head
    by_hand = trainer(None).build(model)
    steps = -(-len(data.train) // 16)
    seed = shoal.personal.base.own_seed(7, 1, "0", "fedrep-head")
    by_hand.fit(params, data.train, 2 * steps, seed, frozen=body)
    after_head = by_hand.weights()
    assert np.array_equal(after_head[~mask], params[~mask])  # the body did not move
    by_hand.fit(after_head, data.train, steps, 7, anchor=params, frozen=head)
    final = by_hand.weights()
    assert np.array_equal(final[mask], after_head[mask])  # nor the head in the body's turn
    np.testing.assert_allclose(state[layers.KEY], final[mask], atol=1e-6)  # params + delta: rounding
    np.testing.assert_array_equal(result.payload["delta"][~mask], (final - params)[~mask])
    assert not result.payload["delta"][mask].any()


def test_fedbn_keeps_batch_norm_layers_and_their_statistics(fed_digits):
    model = functools.partial(cnn_bn, fed_digits.input_shape, fed_digits.num_classes)
    params, spec = initial_params(model, 0)
    names = layers.personal_names(spec, PersonalizationName.FEDBN, ())
    assert {n.rpartition(".")[2] for n in names} == {"weight", "bias", "running_mean", "running_var"}
    assert {n.rpartition(".")[0] for n in names} == {"1", "5", "10"}
    state: dict[str, np.ndarray] = {}
    result = trainer("fedbn").build(model).train(task(params), fed_digits["0"], state)
    mask = layers.personal_mask(spec, names)
    assert not result.payload["delta"][mask].any()
    assert np.abs(result.payload["delta"][~mask]).max() > 0
    assert not np.allclose(state[layers.KEY], params[mask])  # statistics and affine weights moved


# -- Ditto -------------------------------------------------------------------------------------
def test_ditto_infinite_lambda_is_the_global_model(setup):
    model, data, params, _ = setup
    state: dict[str, np.ndarray] = {}
    trainer("ditto", ditto_lambda=float("inf")).build(model).train(task(params), data, state)
    np.testing.assert_array_equal(state[ditto.KEY], params)


def test_ditto_zero_lambda_is_local_training_and_the_update_is_fedavgs(setup):
    model, data, params, _ = setup
    state: dict[str, np.ndarray] = {}
    result = trainer("ditto", ditto_lambda=0.0).build(model).train(task(params), data, state)
    plain = trainer(None).build(model)
    fedavg = plain.train(task(params), data, {})
    np.testing.assert_array_equal(result.payload["delta"], fedavg.payload["delta"])  # the shared model's
    seed = shoal.personal.base.own_seed(7, 1, "0", "ditto")
    plain.fit(params, data.train, -(-len(data.train) // 16), seed)
    np.testing.assert_allclose(state[ditto.KEY], plain.weights(), atol=1e-6)


def test_ditto_step_is_a_proximal_step_toward_the_global_model(fed_digits):
    """One personal step by hand: v1 = (v0 - lr grad F(v0) + lr lambda w) / (1 + lr lambda)."""
    model = functools.partial(mlp, fed_digits.input_shape, fed_digits.num_classes, ())
    w, _ = initial_params(model, 0)
    v0 = w + np.random.default_rng(1).normal(0, 0.1, w.shape).astype(np.float32)
    data = fed_digits["0"]
    lr, lam = 0.1, 3.0
    hp = TorchTrainer(
        lr=lr, local_steps=1, batch_size=16, personalization=Personalization("ditto", ditto_lambda=lam)
    )
    state = {ditto.KEY: v0.copy()}
    hp.build(model).train(task(w), data, state)
    seed = shoal.personal.base.own_seed(7, 1, "0", "ditto")
    idx = next(shoal.client.trainer.batches(len(data.train), 16, 1, seed))
    weight = torch.tensor(v0[: 64 * 10].reshape(10, 64), requires_grad=True)
    bias = torch.tensor(v0[64 * 10 :], requires_grad=True)
    x, y = data.train.x[idx].reshape(len(idx), -1), data.train.y[idx]
    F.cross_entropy(x @ weight.T + bias, y).backward()
    grad = np.concatenate([weight.grad.numpy().ravel(), bias.grad.numpy()])
    expected = (v0 - lr * grad + lr * lam * w) / (1 + lr * lam)
    np.testing.assert_allclose(state[ditto.KEY], expected, atol=1e-6)


# -- APFL --------------------------------------------------------------------------------------
def test_apfl_step_follows_the_paper(fed_digits):
    """One local step by hand (Deng et al. 2020, Algorithm 1), logistic regression:
    w1 = w0 - lr g(w0); v1 = v0 - lr a g(vbar); a1 = a - lr <v0 - w0, g(vbar)>, vbar = a v0 + (1-a) w0."""
    model = functools.partial(mlp, fed_digits.input_shape, fed_digits.num_classes, ())
    w0, _ = initial_params(model, 0)
    v0 = w0 + np.random.default_rng(2).normal(0, 0.3, w0.shape).astype(np.float32)
    data = fed_digits["0"]
    lr, a = 0.5, 0.4
    hp = TorchTrainer(
        lr=lr, local_steps=1, batch_size=16, personalization=Personalization("apfl", apfl_alpha=a)
    )
    state = {apfl.KEY: v0.copy()}
    result = hp.build(model).train(task(w0), data, state)
    idx = next(shoal.client.trainer.batches(len(data.train), 16, 1, 7))
    x, y = data.train.x[idx].reshape(len(idx), -1), data.train.y[idx]

    def grad(flat: np.ndarray) -> np.ndarray:
        weight = torch.tensor(flat[:640].reshape(10, 64), requires_grad=True)
        bias = torch.tensor(flat[640:], requires_grad=True)
        F.cross_entropy(x @ weight.T + bias, y).backward()
        return np.concatenate([weight.grad.numpy().ravel(), bias.grad.numpy()])

    g_mix = grad(a * v0 + (1 - a) * w0)
    np.testing.assert_allclose(result.payload["delta"], -lr * grad(w0), atol=1e-6)
    np.testing.assert_allclose(state[apfl.KEY], v0 - lr * a * g_mix, atol=1e-6)
    expected_alpha = np.clip(a - lr * float(np.dot(v0 - w0, g_mix)), 0, 1)
    np.testing.assert_allclose(state[apfl.ALPHA], [expected_alpha], atol=1e-5)
    # evaluation scores the mixture with the newest global model
    w_new = w0 + 1.0
    mix = apfl.mixture(state, w_new, a)
    np.testing.assert_allclose(
        mix, expected_alpha * state[apfl.KEY] + (1 - expected_alpha) * w_new, atol=1e-5
    )


def test_apfl_fixed_alpha_stays(setup):
    model, data, params, _ = setup
    state: dict[str, np.ndarray] = {}
    trainer("apfl", apfl_alpha=0.3, apfl_adaptive=False).build(model).train(task(params), data, state)
    assert state[apfl.ALPHA][0] == pytest.approx(0.3)


# -- evaluation --------------------------------------------------------------------------------
def test_evaluation_scores_the_personal_and_the_global_model(setup):
    model, data, params, _ = setup
    app = trainer("fedper").build(model)
    state: dict[str, np.ndarray] = {}
    app.train(task(params), data, state)
    out = app.evaluate(EvalTask(1, "0", params), data, state)
    assert set(out.metrics) == {"loss", "accuracy", "global_loss", "global_accuracy"}
    plain = trainer(None).build(model).evaluate(EvalTask(1, "0", params), data, state)
    assert out.metrics["global_accuracy"] == plain.metrics["accuracy"]
    assert set(plain.metrics) == {"loss", "accuracy"}  # no personalization: one model


def test_finetune_scores_the_global_model_trained_locally(setup):
    model, data, params, _ = setup
    app = trainer("finetune", finetune_epochs=3).build(model)
    result = app.train(task(params), data, {})
    np.testing.assert_array_equal(
        result.payload["delta"], trainer(None).build(model).train(task(params), data, {}).payload["delta"]
    )
    out = app.evaluate(EvalTask(1, "0", params), data, {})
    by_hand = trainer(None).build(model)
    seed = shoal.personal.base.own_seed(0, 1, "0", "finetune")
    by_hand.fit(params, data.train, 3 * -(-len(data.train) // 16), seed)
    loss, acc = shoal.client.evaluate_module(by_hand.module, data.test)
    assert (out.metrics["loss"], out.metrics["accuracy"]) == (loss, acc)
    assert out.metrics["loss"] < out.metrics["global_loss"]  # an untrained model, tuned on its data


def test_federated_eval_reports_the_distribution_over_clients():
    accs = [0.9, 0.5, 0.8, 0.7, 0.6, 0.95, 0.85, 0.75, 0.65, 0.55]
    results = [EvalResult(1, str(i), 10 * (i + 1), {"loss": 1.0, "accuracy": a}) for i, a in enumerate(accs)]
    record = federated_eval_record(results)
    assert record["fed_eval_client_mean"] == pytest.approx(np.mean(accs))
    assert record["fed_eval_client_p10"] == pytest.approx(np.percentile(accs, 10))
    assert record["fed_eval_client_min"] == 0.5
    weights = np.arange(1, 11) * 10
    assert record["fed_eval_accuracy"] == pytest.approx(np.dot(weights, accs) / weights.sum())
    assert "fed_eval_global_accuracy" not in record


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"loss": 1.0}, "no 'accuracy'"),
        ({"loss": 1.0, "accuracy": 1.5}, "outside"),
        ({"loss": float("nan"), "accuracy": 0.5}, "finite"),
        ({"loss": 1.0, "accuracy": 0.5, "global_accuracy": -0.1}, "outside"),
        ({"loss": 1.0, "accuracy": "high"}, "finite"),
    ],
)
def test_a_bad_evaluation_is_not_counted(metrics, reason):
    assert reason in (check_eval(EvalResult(1, "x", 5, metrics)) or "")
    assert check_eval(EvalResult(1, "x", 5, {"loss": 1.0, "accuracy": 0.5})) is None


def test_personalized_federation_beats_the_global_model_on_skewed_clients(fed_digits):
    """End to end, on label-skewed clients: each personal model scores above the global one
    on its own client, and every client is scored."""
    data = shoal.data.dirichlet(shoal.data.digits(), num_clients=10, alpha=0.1, seed=0, holdout_fraction=0.3)
    model = functools.partial(mlp, data.input_shape, data.num_classes, (32,))
    for method in ("fedper", "ditto", "finetune"):
        history = shoal.simulate(
            model, data, shoal.FedAvg(clients_per_round=5), trainer(method, lr=0.05),
            rounds=6, federated_eval_every=6, federated_eval_clients=10,
        )  # fmt: skip
        last = history.records[-1]
        assert last["fed_eval_clients"] == 10
        assert last["fed_eval_accuracy"] > last["fed_eval_global_accuracy"] + 0.1, method
        assert last["fed_eval_client_min"] <= last["fed_eval_client_p10"] <= last["fed_eval_client_mean"]


def test_one_method_replaces_the_loop_at_a_time(setup):
    model, data, params, _ = setup
    hp = TorchTrainer(dp_sgd_noise_multiplier=1.0, personalization=Personalization("ditto"))
    with pytest.raises(ValueError, match="DP-SGD does not combine with ditto"):
        hp.build(model).train(task(params), data, {})


def test_local_run_carries_the_layout(setup):
    spec = setup[3]
    run = shoal.client.trainer.local_run(trainer("fedper"), {}, 10, spec)
    assert isinstance(run, LocalRun) and run.spec == spec


def test_cohorts_train_personal_layers_as_one_by_one(fed_digits, small_mlp):
    """FedPer in the vectorized cohorts: each client starts from its own head, as TorchClient does."""
    from shoal.runtime.vectorized import VectorizedBackend

    hp = trainer("fedper", lr=0.1)
    run = functools.partial(
        shoal.simulate, small_mlp, fed_digits, shoal.FedAvg(clients_per_round=8), hp,
        rounds=3, seed=2, federated_eval_every=3, federated_eval_clients=20,
    )  # fmt: skip
    seq = run(backend=InProcessBackend(hp, small_mlp, fed_digits, (), 2))
    vec = run(backend=VectorizedBackend(hp, small_mlp, fed_digits, cohort_size=4, run_seed=2))
    np.testing.assert_allclose(vec.params, seq.params, rtol=1e-5, atol=1e-6)
    assert vec.records[-1]["fed_eval_accuracy"] == pytest.approx(seq.records[-1]["fed_eval_accuracy"])


@pytest.mark.parametrize("method", ["fedrep", "ditto", "apfl"])
def test_cohorts_refuse_methods_that_train_in_turns(fed_digits, small_mlp, method):
    from shoal.runtime.vectorized import cohort_supported

    reason = cohort_supported(small_mlp(), trainer(method)) or ""
    assert "client by client" in reason


def test_the_config_table(tmp_path):
    from shoal import config

    scored = {"eval": {"federated_eval_every": 1}}
    cfg = config.from_dict(
        {"personalization": {"method": "fedrep", "personal_layers": ["3.*"], "head_epochs": 3}, **scored}
    )
    assert cfg.trainer.personalization.method is PersonalizationName.FEDREP  # every device gets it
    again = config.from_dict(__import__("tomllib").loads(config.to_toml(cfg)))
    assert again.personalization == cfg.personalization and again.trainer == cfg.trainer
    with pytest.raises(shoal.errors.ConfigError, match="personal_layers is read by method"):
        config.from_dict({"personalization": {"method": "ditto", "personal_layers": ["3.*"]}, **scored})
    with pytest.raises(shoal.errors.ConfigError, match=r"unknown config key 'personalization\.lambda'"):
        config.from_dict({"personalization": {"method": "ditto", "lambda": 1.0}})
    with pytest.raises(shoal.errors.ConfigError, match=r"personalization\.method: 'fedprox' is not allowed"):
        config.from_dict({"personalization": {"method": "fedprox"}, **scored})
    with pytest.raises(shoal.errors.ConfigError, match="only federated evaluation scores"):
        config.from_dict({"personalization": {"method": "ditto"}})
    with pytest.raises(shoal.errors.ConfigError, match="control state"):
        config.from_dict(
            {"personalization": {"method": "fedper"}, "strategy": {"name": "scaffold"}, **scored}
        )
    flags = {f.flag for f in config.flags()}
    assert {"--personalization-method", "--ditto-lambda"} <= flags
