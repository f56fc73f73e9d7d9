"""The report's curves over rounds, as matplotlib figures (tests read their Axes) and inline SVG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from shoal.runtime.history import Record

# Colour, line style and marker per series: two series with equal values (bytes down and
# up for a model that travels both ways whole) must both stay visible, not one under the other.
_STYLES = (("C0", "-", "o"), ("C1", "--", "s"), ("C2", ":", "^"), ("C3", "-.", "D"))

# The series of the report's fixed plots, as (record key, legend label).
_ACCURACY = (
    ("test_accuracy", "central test"),
    ("fed_eval_accuracy", "client holdouts"),
    ("test_accuracy_old", "old data (drift)"),  # a drift's first stage, and what came later
    ("test_accuracy_new", "new data (drift)"),
)
_LOSS = (
    ("train_loss", "train (clients)"),
    ("test_loss", "central test"),
    ("fed_eval_loss", "client holdouts"),
)
# Federated evaluation's spread over clients (a personalized model is judged by its worst)
_SPREAD = (
    ("fed_eval_client_mean", "mean client"),
    ("fed_eval_client_p10", "10th percentile"),
    ("fed_eval_client_min", "worst client"),
    ("fed_eval_global_accuracy", "global model (holdouts)"),
)
_BYTES = (("bytes_down", "down"), ("bytes_up", "up"))
_CLIENTS = (("clients_completed", "completed"), ("clients_failed", "failed"))
_PRIVACY = (("dp_epsilon", "central (whole run)"), ("ldp_epsilon_worst_client", "local (worst client)"))
# Round bookkeeping that is no measurement of the model or the clients.
_BOOKKEEPING = frozenset({"round", "aborted", "clients_selected", "fed_eval_clients", "wall_time", "elapsed"})
# A fleet's (shoal/fleet): what its rounds cost in time, devices and energy.
_LOST = (("fleet_dropped", "left mid-task"), ("fleet_late", "late"), ("fleet_not_needed", "not needed"))
_FLEET = frozenset(
    {"virtual_hours", "round_virtual_s", "energy_wh", "battery_pct_max", "in_flight", *(k for k, _ in _LOST)}
)
_PLOTTED = (
    frozenset(k for keys in (_ACCURACY, _SPREAD, _LOSS, _BYTES, _CLIENTS, _PRIVACY) for k, _ in keys)
    | {"fed_eval_global_client_p10"}
    | _FLEET
)
TIER = ("tier_", "_completed")  # tier_<name>_completed: results from that tier this round


def series(records: list[Record], key: str) -> tuple[list[int], list[float]]:
    """Rounds and values of every record that holds ``key``."""
    pts = [(int(r["round"]), float(r[key])) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _draw(
    ax: Axes, records: list[Record], keys: Sequence[tuple[str, str]], scale: float
) -> tuple[int, float]:
    """Plot each recorded series; return how many were drawn and the highest value."""
    drawn: list[tuple[str, list[int], list[float]]] = []
    peak = 0.0
    for key, label in keys:
        x, y = series(records, key)
        if not x:
            continue
        y = [v * scale for v in y]
        peak = max(peak, max(y))
        same = next((other for other, ox, oy in drawn if (ox, oy) == (x, y)), None)
        i = len(drawn)
        colour, linestyle, marker = _STYLES[i % len(_STYLES)]
        # Later series are thinner with hollow markers, so an earlier equal one shows around them.
        ax.plot(
            x,
            y,
            color=colour,
            linestyle=linestyle,
            linewidth=max(2.8 - 0.9 * i, 1.2),
            marker=marker if len(x) < 30 else None,
            markersize=max(7.0 - 2.0 * i, 3.0),
            markerfacecolor=colour if i == 0 else "none",
            label=f"{label} (same as {same})" if same else label,
            zorder=2 + i,
        )
        drawn.append((label, x, y))
    return len(drawn), peak


def figure(
    records: list[Record],
    keys: Sequence[tuple[str, str]],
    title: str,
    ylabel: str,
    scale: float = 1.0,
    from_zero: bool = False,
    integer_y: bool = False,
) -> Figure:
    """One plot of ``(key, label)`` series against the round; the x ticks are whole rounds."""
    fig = Figure(figsize=(5.2, 3.4))  # no pyplot: no global figure registry to leak into
    ax = fig.subplots()
    drawn, peak = _draw(ax, records, keys, scale)
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    if integer_y:  # client counts too
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    if from_zero:
        ax.set_ylim(0, peak * 1.15 or 1.0)  # headroom above flat lines (bytes, clients)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def figures(records: list[Record], summary: dict[str, Any]) -> list[Figure]:
    """The report's plots, in page order: accuracy (and its spread over clients, when clients
    were evaluated), loss, bytes, clients, and privacy if spent."""
    out = [figure(records, _ACCURACY, "Accuracy", "accuracy")]
    if any(r.get("fed_eval_client_mean") is not None for r in records):
        out.append(figure(records, _SPREAD, "Accuracy per client (held-out data)", "accuracy"))
    out += [
        figure(records, _LOSS, "Loss", "cross-entropy"),
        figure(records, _BYTES, "Bytes on the wire per round", "MB", 1e-6, from_zero=True),
        figure(records, _CLIENTS, "Clients per round", "clients", from_zero=True, integer_y=True),
    ]
    if any(r.get("dp_epsilon") is not None or r.get("ldp_epsilon_worst_client") is not None for r in records):
        out.append(
            figure(
                records,
                _PRIVACY,
                f"Privacy spent (delta {summary.get('dp_delta', float('nan')):.3g})",
                "epsilon",
                from_zero=True,
            )
        )
    return out


def other_keys(records: list[Record]) -> list[str]:
    """Every numeric key of the records that no plot above shows: the clients' own metrics
    (``f1``, ``peak_memory_mb_max``), ``local_steps``, what the transforms measure."""
    found = {
        k for r in records for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return sorted(k for k in found - _PLOTTED - _BOOKKEEPING if not (_tier(k) or _tier(k, "lost")))


def _tier(key: str, kind: str = "completed") -> str | None:
    """The tier a ``tier_<name>_completed`` (or ``_lost``) key counts, or None."""
    end = f"_{kind}"
    return key[len(TIER[0]) : -len(end)] if key.startswith(TIER[0]) and key.endswith(end) else None


def fleet_figures(records: list[Record], tier_shares: dict[str, float] | None) -> list[Figure]:
    """A fleet run's plots: accuracy against virtual time (time to accuracy), who got to
    contribute by tier against the tiers' shares of the fleet (is the fast tier over-
    represented?), results lost per round, and training energy per round."""
    if not any("virtual_hours" in r for r in records):
        return []
    timed = Figure(figsize=(5.2, 3.4))
    ax = timed.subplots()
    for i, (key, label) in enumerate(_ACCURACY):
        pts = [
            (r["virtual_hours"], r[key]) for r in records if r.get(key) is not None and "virtual_hours" in r
        ]
        if pts:
            colour, style, _ = _STYLES[i]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, linestyle=style, label=label)
    ax.set_title("Accuracy over virtual time")
    ax.set_xlabel("virtual hours")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    timed.tight_layout()
    totals: dict[str, float] = {}
    for r in records:
        for k, v in r.items():
            if (name := _tier(k)) is not None:
                totals[name] = totals.get(name, 0.0) + float(v)
    fair = Figure(figsize=(5.2, 3.4))
    ax = fair.subplots()
    shares = tier_shares or {}
    names = [*shares, *(n for n in totals if n not in shares)]  # a trace's own tiers too
    done = sum(totals.values()) or 1.0
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [totals.get(n, 0.0) / done for n in names], width=0.4, label="results")
    if tier_shares:
        ax.bar(
            [x + 0.2 for x in xs], [shares.get(n, 0.0) for n in names], width=0.4, label="fleet", color="C1"
        )
    ax.set_xticks(list(xs), names)
    ax.set_title("Who contributes, by tier")
    ax.set_ylabel("share")
    ax.legend()
    fair.tight_layout()
    return [
        timed,
        fair,
        figure(records, _LOST, "Results lost per round", "devices", from_zero=True, integer_y=True),
        figure(records, (("energy_wh", "training"),), "Device energy per round", "Wh", from_zero=True),
        figure(records, (("battery_pct_max", "worst device"),), "Battery drained", "%", from_zero=True),
    ]


def other_figures(records: list[Record]) -> list[Figure]:
    """One plot per :func:`other_keys` key, on its own scale, titled by the key."""
    return [figure(records, [(key, key)], key, key) for key in other_keys(records)]


def to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element to inline in the page (no XML header)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]
