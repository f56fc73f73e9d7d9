"""A self-contained HTML report of a run folder: summary, plots (inline SVG), config."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from shoal.config import load
from shoal.errors import ConfigError
from shoal.report.config_view import config_text
from shoal.report.plots import figures, fleet_figures, other_figures, series, to_svg
from shoal.runtime.history import Record, load_history

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-weight:600}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;font-size:14px}
th{background:#f4f4f4}.plots{display:grid;grid-template-columns:1fr 1fr;gap:1em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:13px}
"""


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
    accs = series(records, "test_accuracy")[1]
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


def _config_section(path: Path, backend_used: str | None) -> str:
    if not path.is_file():
        return "<p>Run from the Python API; no config file.</p>"
    try:
        text = config_text(load(path), backend_used)
    except ConfigError as exc:
        # A file this version cannot read (an older run): show it as written, and why.
        note = f"<p>Shown as written; it does not load here ({html.escape(str(exc))}).</p>"
        return f"{note}<pre>{html.escape(path.read_text())}</pre>"
    note = (
        "<p>The settings this run read: keys that do not apply to its dataset, partition, "
        "strategy and backend are left out. <code>config.toml</code> in the run folder holds every key.</p>"
    )
    return f"{note}<pre>{html.escape(text)}</pre>"


def _others_section(plots: list[str]) -> str:
    if not plots:
        return ""
    note = (
        "<p>Every other number the rounds recorded: your clients' own metrics (under "
        "<code>KEY</code>, or <code>KEY_REDUCER</code> for a declared reducer) and what the "
        "client algorithms and transforms measured.</p>"
    )
    return f'<h2>Other metrics</h2>{note}<div class="plots">{"".join(f"<div>{p}</div>" for p in plots)}</div>'


def _fleet_section(records: list[Record], config_path: Path) -> str:
    shares = None
    try:  # the tiers' shares of the fleet, if this run's fleet file still loads here
        from shoal.fleet import load_fleet

        fleet = load(config_path).fleet if config_path.is_file() else None
        shares = {t.name: t.share for t in load_fleet(fleet).tiers} if fleet else None
    except ConfigError:
        pass
    plots = [to_svg(fig) for fig in fleet_figures(records, shares)]
    if not plots:
        return ""
    last = records[-1]
    note = (
        f"<p>{last.get('virtual_hours', 0.0):.2f} virtual hours over {len(records)} rounds; "
        f"{sum(r.get('energy_wh', 0.0) for r in records):.3g} Wh of training on the devices.</p>"
    )
    return f'<h2>Fleet</h2>{note}<div class="plots">{"".join(f"<div>{p}</div>" for p in plots)}</div>'


def render(run_dir: str | Path) -> Path:
    """Write ``report.html`` into the run folder and return its path."""
    run_dir = Path(run_dir)
    records = load_history(run_dir)
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.toml"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    plots = [to_svg(fig) for fig in figures(records, summary)]
    others = [to_svg(fig) for fig in other_figures(records)]
    title = f"shoal run {html.escape(run_dir.name)}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>{_CSS}</style></head><body>
<h1>shoal run <code>{html.escape(run_dir.name)}</code></h1>
<h2>Summary</h2>{_table(_summary(records, summary))}
<h2>Curves</h2><div class="plots">{"".join(f"<div>{p}</div>" for p in plots)}</div>
{_fleet_section(records, config_path)}
{_others_section(others)}
<h2>Configuration</h2>{_config_section(config_path, summary.get("backend"))}
</body></html>
"""
    out = run_dir / "report.html"
    out.write_text(page)
    return out
