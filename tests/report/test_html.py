"""The HTML report: the config it shows, the round axis, and the bytes plot."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D

from shoal.config import RunConfig, from_dict, load, to_toml
from shoal.report import render
from shoal.report.config_view import applicable, config_text
from shoal.report.plots import figures

BYTES = 71_434  # a digits MLP's float32 weights: the same vector travels down and up


def _records(rounds: int) -> list[dict[str, Any]]:
    return [
        {
            "round": r,
            "train_loss": 2.0 / r,
            "test_accuracy": 0.5 + 0.1 * r,
            "test_loss": 1.5 / r,
            "clients_selected": 3,
            "clients_completed": 3,
            "clients_failed": 0,
            "bytes_down": 3 * BYTES,
            "bytes_up": 3 * BYTES,
            "dp_epsilon": 0.7 * r,
            "elapsed": 0.4 * r,
        }
        for r in range(1, rounds + 1)
    ]


def _run_folder(tmp_path: Path, cfg: RunConfig, rounds: int = 3) -> Path:
    """What ``shoal run`` leaves behind, without training: config, metrics, summary."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text(to_toml(cfg))
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(rounds)))
    summary = {"rounds": rounds, "backend": "InProcessBackend", "dp_delta": 1e-5, "seed": cfg.seed}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _config_shown(page: str) -> str:
    section = page.split("<h2>Configuration</h2>", 1)[1]
    return html.unescape(section.split("<pre>", 1)[1].split("</pre>", 1)[0])


DIGITS = {"data": {"dataset": "digits", "num_clients": 10}, "model": {"name": "mlp", "hidden": [16]}}


def test_config_of_a_plain_digits_run_leaves_out_what_it_did_not_use(tmp_path: Path) -> None:
    cfg = from_dict(DIGITS)
    shown = _config_shown(render(_run_folder(tmp_path, cfg)).read_text())
    for absent in ("[privacy]", "[secagg]", "[he]", "noise_multiplier", "threshold", "poly_modulus_degree"):
        assert absent not in shown, absent
    assert "# privacy: off" in shown and "# secagg: off" in shown and "# he: off" in shown
    for absent in ("synthetic_", "dirichlet_alpha", "shards_per_client", "quantity_sigma", "label_column"):
        assert absent not in shown, absent  # an IID split of a built-in dataset reads none of them
    for absent in ("ray_", "cohort_size", "proximal_mu", "server_momentum", "feddyn_alpha", "beta1"):
        assert absent not in shown, absent  # fedavg in process: no Ray, no cohorts, no other strategy
    assert 'dataset = "digits"' in shown and 'partition = "iid"' in shown and "hidden = [" in shown


def test_config_shows_the_keys_of_the_chosen_partition_strategy_and_privacy_mode(tmp_path: Path) -> None:
    raw = {
        **DIGITS,
        "data": {"dataset": "digits", "num_clients": 10, "partition": "dirichlet", "dirichlet_alpha": 0.3},
        "strategy": {"name": "fedprox", "proximal_mu": 0.1},
        "privacy": {"mode": "central", "noise": "seeded"},
    }
    shown = _config_shown(render(_run_folder(tmp_path, from_dict(raw))).read_text())
    assert "dirichlet_alpha = 0.3" in shown and "proximal_mu = 0.1" in shown
    assert "[privacy]" in shown and 'mode = "central"' in shown and "noise_multiplier" in shown
    assert "shards_per_client" not in shown and "target_quantile" not in shown  # no adaptive clipping
    assert "# secagg: off" in shown and "[secagg]" not in shown


def test_the_shown_config_still_loads_as_the_run_config(tmp_path: Path) -> None:
    cfg = from_dict({**DIGITS, "backend": "ray", "ray_workers": 3})
    text = config_text(cfg)
    assert "ray_workers = 3" in text and "[privacy]" not in text
    (tmp_path / "shown.toml").write_text(text)
    assert load(tmp_path / "shown.toml") == cfg  # every key left out is at its default


def _x_tick_labels(svg: str) -> list[str]:
    """The x axis's tick labels: matplotlib writes each text as an SVG comment."""
    axis = svg.split('id="matplotlib.axis_1"', 1)[1].split('id="matplotlib.axis_2"', 1)[0]
    return [t for t in re.findall(r"<!-- (.*?) -->", axis) if t != "round"]


def test_round_ticks_are_whole_rounds_on_every_plot(tmp_path: Path) -> None:
    page = render(_run_folder(tmp_path, from_dict(DIGITS), rounds=3)).read_text()
    svgs = page.split("<svg")[1:]
    assert len(svgs) == 5  # accuracy, loss, bytes, clients, privacy
    for svg in svgs:
        labels = _x_tick_labels(svg)
        assert labels, "no x tick labels found"
        assert all(re.fullmatch(r"−?\d+", t) for t in labels), labels
    for fig in figures(_records(2), {"dp_delta": 1e-5}):
        ax = fig.axes[0]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


def test_bytes_plot_draws_equal_down_and_up_both_visible_and_says_they_are_equal(tmp_path: Path) -> None:
    ax = figures(_records(3), {})[2].axes[0]
    assert ax.get_title() == "Bytes on the wire per round"
    down, up = (line for line in ax.get_lines() if isinstance(line, Line2D))
    assert np.array_equal(np.asarray(down.get_ydata()), np.asarray(up.get_ydata()))  # data unchanged: equal
    assert down.get_color() != up.get_color()
    assert down.get_linestyle() != up.get_linestyle() and down.get_marker() != up.get_marker()
    assert down.get_linewidth() > up.get_linewidth()  # the one beneath shows around the one on top
    legend = ax.get_legend()
    assert legend is not None
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["down", "up (same as down)"]
    page = render(_run_folder(tmp_path, from_dict(DIGITS))).read_text()
    assert "up (same as down)" in page


def test_bytes_plot_labels_unequal_series_plainly() -> None:
    records = _records(3)
    for r in records:
        r["bytes_up"] = r["bytes_down"] // 2  # e.g. half-precision uploads
    ax = figures(records, {})[2].axes[0]
    legend = ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["down", "up"]


def test_natural_client_datasets_show_their_own_keys_and_no_partition() -> None:
    raw = {
        "data": {"dataset": "synthetic", "num_clients": 30, "synthetic_alpha": 1.0, "synthetic_beta": 1.0},
        "model": {"name": "mlp"},
        "strategy": {"name": "fedadagrad"},
        "privacy": {"mode": "local"},
    }
    shown, off = applicable(from_dict(raw), backend_used="VectorizedBackend")
    synthetic = {"synthetic_alpha", "synthetic_beta", "synthetic_iid"}
    assert set(shown["data"]) == {"dataset", "num_clients", *synthetic}  # no partition, no test_fraction
    assert {"beta1", "tau"} <= set(shown["strategy"]) and "beta2" not in shown["strategy"]
    assert "accountant" not in shown["privacy"] and "clip_norm" in shown["privacy"]  # local DP
    assert shown["cohort_size"] == 32 and off == ["secagg", "he", "compression"]  # "auto": vectorized


def test_per_client_spread_is_plotted_when_clients_were_evaluated() -> None:
    records = _records(3)
    assert [f.axes[0].get_title() for f in figures(records, {})][:2] == ["Accuracy", "Loss"]
    for r in records:
        r.update(
            fed_eval_accuracy=0.8, fed_eval_client_mean=0.78, fed_eval_client_p10=0.6,
            fed_eval_client_min=0.4, fed_eval_global_accuracy=0.5, fed_eval_global_client_p10=0.1,
        )  # fmt: skip
    spread = figures(records, {})[1].axes[0]
    assert spread.get_title() == "Accuracy per client (held-out data)"
    legend = spread.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "mean client", "10th percentile", "worst client", "global model (holdouts)",
    ]  # fmt: skip


def test_a_drifting_run_plots_old_and_new_data_on_the_accuracy_plot() -> None:
    records = _records(3)
    for r in records:
        r.update(test_accuracy_old=0.9 - 0.3 * r["round"], test_accuracy_new=0.1 * r["round"])
    accuracy = figures(records, {})[0].axes[0]
    legend = accuracy.get_legend()
    assert legend is not None
    names = [t.get_text() for t in legend.get_texts()]
    assert names == ["central test", "old data (drift)", "new data (drift)"]
