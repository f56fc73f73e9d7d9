"""A self-contained HTML report of a run folder: summary, plots (inline SVG), config."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display here or on servers
import matplotlib.pyplot as plt

from shoal.runtime.history import Record, load_history

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-weight:600}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;font-size:14px}
th{background:#f4f4f4}.plots{display:grid;grid-template-columns:1fr 1fr;gap:1em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:13px}
"""


def _series(records: list[Record], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["round"], float(r[key])) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot(
    records: list[Record],
    keys: list[tuple[str, str]],
    title: str,
    ylabel: str,
    scale: float = 1.0,
    from_zero: bool = False,
) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    drawn, peak = False, 0.0
    for key, label in keys:
        x, y = _series(records, key)
        if x:
            peak = max(peak, max(y) * scale)
            ax.plot(x, [v * scale for v in y], marker="o" if len(x) < 30 else None, ms=3, label=label)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    if from_zero:
        ax.set_ylim(0, peak * 1.15 or 1.0)  # headroom above flat lines (bytes, clients)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", transform=ax.transAxes)
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def _table(rows: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items()
    )
    return f"<table>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def _summary(records: list[Record], summary: dict[str, Any]) -> dict[str, Any]:
    aborted = sum(1 for r in records if r.get("aborted"))
    accs = _series(records, "test_accuracy")[1]
    out: dict[str, Any] = {
        "rounds completed": len(records),
        "rounds aborted": aborted,
        "final test accuracy": accs[-1] if accs else "not evaluated",
        "best test accuracy": max(accs) if accs else "not evaluated",
        "clients failed (all rounds)": sum(int(r.get("clients_failed", 0)) for r in records),
        "MB down (server to clients)": sum(r.get("bytes_down", 0) for r in records) / 1e6,
        "MB up (clients to server)": sum(r.get("bytes_up", 0) for r in records) / 1e6,
        "wall time (s)": records[-1].get("elapsed", 0.0) if records else 0.0,
    }
    keys = (
        "dp_epsilon",
        "ldp_epsilon_worst_client",
        "dp_delta",
        "stopped",
        "model_hash",
        "num_params",
        "seed",
    )
    out.update({k: v for k, v in summary.items() if k in (*keys, "backend")})
    return out


def render(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run folder and return its path."""
    run_dir = Path(run_dir)
    records = load_history(run_dir)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.toml"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    config_text = (
        config_path.read_text() if config_path.is_file() else "(run from the Python API; no config file)"
    )
    plots = [
        _plot(
            records,
            [("test_accuracy", "central test"), ("fed_eval_accuracy", "client holdouts")],
            "Accuracy",
            "accuracy",
        ),
        _plot(
            records,
            [
                ("train_loss", "train (clients)"),
                ("test_loss", "central test"),
                ("fed_eval_loss", "client holdouts"),
            ],
            "Loss",
            "cross-entropy",
        ),
        _plot(
            records,
            [("bytes_down", "down"), ("bytes_up", "up")],
            "Bytes on the wire per round",
            "MB",
            1e-6,
            from_zero=True,
        ),
        _plot(
            records,
            [("clients_completed", "completed"), ("clients_failed", "failed")],
            "Clients per round",
            "clients",
            from_zero=True,
        ),
    ]
    if any(r.get("dp_epsilon") is not None or r.get("ldp_epsilon_worst_client") is not None for r in records):
        plots.append(
            _plot(
                records,
                [("dp_epsilon", "central (whole run)"), ("ldp_epsilon_worst_client", "local (worst client)")],
                f"Privacy spent (delta {summary.get('dp_delta', float('nan')):.3g})",
                "epsilon",
                from_zero=True,
            )
        )
    title = f"shoal run {html.escape(run_dir.name)}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{_CSS}</style></head><body>
<h1>shoal run <code>{html.escape(run_dir.name)}</code></h1>
<h2>Summary</h2>{_table(_summary(records, summary))}
<h2>Curves</h2><div class="plots">{"".join(f"<div>{p}</div>" for p in plots)}</div>
<h2>Configuration</h2><pre>{html.escape(config_text)}</pre>
</body></html>
"""
    out = run_dir / "report.html"
    out.write_text(page)
    return out
