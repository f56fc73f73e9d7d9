"""[eval] metrics: each score against its definition (or scikit-learn's), and how they
travel: config, server test set, device holdouts, the summary and the server's check."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from shoal.config import RunConfig
from shoal.config import from_dict as load_dict
from shoal.errors import ConfigError
from shoal.messages import EvalResult
from shoal.runtime.simulation import federated_eval_record
from shoal.runtime.validation import check_eval
from shoal.scores import scores


def _binary_case(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    logits = rng.normal(size=(n, 2))
    logits[:, 1] += 1.5 * y  # informative, not perfect
    return logits, y


def test_binary_scores_match_their_definitions() -> None:
    logits, y = _binary_case()
    got = scores(logits, y, ("precision", "recall", "f1", "far", "frr", "pr_auc", "roc_auc"))
    flagged = logits[:, 1] > logits[:, 0]
    tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
    fn, tn = int((~flagged & (y == 1)).sum()), int((~flagged & (y == 0)).sum())
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    assert got["recall"] == pytest.approx(tp / (tp + fn))
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["far"] == pytest.approx(fp / (fp + tn))
    assert got["frr"] == pytest.approx(fn / (fn + tp))
    p1 = 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, p1))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert 0.2 < got["pr_auc"] < 1.0  # better than the base rate, short of perfect


def test_top_k_counts_the_label_among_the_k_highest() -> None:
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 3.0, 2.0]])
    y = np.array([1, 0, 3])
    got = scores(logits, y, ("top2", "top3", "top10"))
    assert got == {"top2": pytest.approx(2 / 3), "top3": pytest.approx(2 / 3), "top10": 1.0}


def test_a_score_a_test_set_cannot_define_is_left_out() -> None:
    logits, _ = _binary_case(n=50)
    no_positives = np.zeros(50, dtype=np.int64)
    got = scores(logits, no_positives, ("pr_auc", "roc_auc", "frr", "recall", "far"))
    assert set(got) == {"far"}  # no fraud in this bank's holdout: nothing to rank or to miss


def test_binary_scores_refuse_a_many_class_model() -> None:
    with pytest.raises(ValueError, match="two-class"):
        scores(np.zeros((3, 5)), np.zeros(3, dtype=np.int64), ("far",))


def test_the_config_names_unknown_metrics_and_many_class_misuse(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown metric 'top1'.*top2\.\.top10"):
        load_dict({"eval": {"metrics": ["top1"]}})
    cfg = load_dict(
        {
            "rounds": 1,
            "data": {"dataset": "digits", "num_clients": 3},
            "strategy": {"clients_per_round": 3},
            "eval": {"metrics": ["far"]},
        }
    )
    from shoal import experiment

    with pytest.raises(ConfigError, match=r"two-class model.*10 classes"):
        experiment.run(cfg, tmp_path)


def test_the_trainer_carries_the_metrics_but_the_toml_keeps_them_in_eval() -> None:
    from shoal.config import to_toml

    cfg = load_dict({"eval": {"metrics": ["top3", "top3"]}})
    assert cfg.eval.metrics == ("top3",) and cfg.trainer.eval_metrics == ("top3",)
    text = to_toml(cfg)
    assert "eval_metrics" not in text and load_dict(tomllib.loads(text)).eval.metrics == ("top3",)
    assert RunConfig() == load_dict({})


def test_the_server_refuses_a_metric_outside_zero_one_but_not_an_apps_own() -> None:
    ok = {"loss": 0.3, "accuracy": 0.9}
    assert check_eval(EvalResult(1, "a", 10, {**ok, "pr_auc": 0.7, "my_count": 12.0})) is None
    assert "outside [0, 1]" in str(check_eval(EvalResult(1, "a", 10, {**ok, "pr_auc": 1.7})))
    assert "outside [0, 1]" in str(check_eval(EvalResult(1, "a", 10, {**ok, "global_far": -0.1})))
    assert "not a finite number" in str(check_eval(EvalResult(1, "a", 10, {**ok, "top3": float("nan")})))


def test_federated_means_count_only_the_devices_that_define_a_metric() -> None:
    results = [
        EvalResult(1, "a", 100, {"loss": 1.0, "accuracy": 0.9, "pr_auc": 0.5}),
        EvalResult(1, "b", 300, {"loss": 1.0, "accuracy": 0.5}),  # no fraud held out
        EvalResult(1, "c", 300, {"loss": 1.0, "accuracy": 0.5, "pr_auc": 0.9}),
    ]
    record = federated_eval_record(results)
    assert record["fed_eval_pr_auc"] == pytest.approx((0.5 * 100 + 0.9 * 300) / 400)


def test_a_run_reports_its_metrics_on_the_test_set_the_holdouts_and_per_device(tmp_path) -> None:
    from shoal import experiment

    cfg = load_dict(
        {
            "rounds": 2,
            "data": {"dataset": "digits", "num_clients": 6, "holdout_fraction": 0.2},
            "model": {"name": "mlp", "hidden": [16]},
            "strategy": {"clients_per_round": 3},
            "eval": {"metrics": ["top3"], "federated_eval_every": 2, "federated_eval_clients": 6},
        }
    )
    experiment.run(cfg, tmp_path)
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["test_top3"] >= last["test_accuracy"] and last["fed_eval_top3"] >= last["fed_eval_accuracy"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_test_top3"] == last["test_top3"]
    assert len(summary["clients"]) == 6
    assert all(0 <= c["top3"] <= 1 and c["top3"] >= c["accuracy"] for c in summary["clients"].values())
