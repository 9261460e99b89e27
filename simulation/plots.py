"""PNG plots of a campaign: what a person looks at before trusting the numbers.

* ``detection_and_false_alarms.png`` — per scenario: the detection rate of the genuine
  ones and the false-alarm rate of every one, with 95 % intervals;
* ``tradeoff.png`` — detection against false alarms (per swept setting, or per warning
  threshold replayed from the recorded scores), the Pareto front marked;
* ``time_to_detect.png`` — the histogram of ticks from onset to alert.

Matplotlib is an optional dependency (``pip install 'convergence[plot]'``); without it
:func:`write_plots` raises :class:`PlotError` saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PlotError", "write_plots"]


class PlotError(RuntimeError):
    """Plots cannot be written; the message says why and what to do."""


def _pct(x: float | None, digits: int) -> str:
    """A rate as a percentage; ``-`` when there was nothing to measure (e.g. no decoys)."""
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def write_plots(summary: dict[str, Any], ttd_ticks: list[float], out: Path) -> list[Path]:
    """Write the campaign's three PNGs into ``out``; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(f"plots need matplotlib ({exc}); install it with "
                        "`pip install 'convergence[plot]'` or leave out --out") from None
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    per = summary["per_scenario"]
    names = list(per)
    fig, ax = plt.subplots(figsize=(12, 0.28 * len(names) + 1.5))
    ys = range(len(names))
    det = [per[n]["detection_rate"] if per[n]["detection_rate"] is not None else float("nan")
           for n in names]
    fa = [per[n]["false_alarm_rate"] or 0.0 for n in names]

    def err(block: str) -> list[list[float]]:
        lo, hi = [], []
        for n in names:
            b = per[n].get(block)
            if not b or b.get("ci95") is None or b.get("rate") is None:
                lo.append(0.0)
                hi.append(0.0)
            else:
                lo.append(b["rate"] - b["ci95"][0])
                hi.append(b["ci95"][1] - b["rate"])
        return [lo, hi]

    ax.barh([y + 0.2 for y in ys], det, height=0.38, xerr=err("detection"), color="#2b8a3e",
            label="detection rate (genuine)")
    ax.barh([y - 0.2 for y in ys], fa, height=0.38, xerr=err("false_alarm"), color="#c92a2a",
            label="runs with a false alarm")
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.axvline(0.99, color="#2b8a3e", ls=":", lw=0.8)
    ax.axvline(0.01, color="#c92a2a", ls=":", lw=0.8)
    ax.set_title(f"Campaign {summary['campaign_id']}: {summary['tests']} runs, "
                 f"detection {_pct(summary['detection_rate'], 1)}, false alarms "
                 f"{_pct(summary['false_alarm_rate'], 2)}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    paths.append(out / "detection_and_false_alarms.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    pts = [p for p in summary["tradeoff"] if p["detection_rate"] is not None
           and p["false_alarm_rate"] is not None]
    ax.scatter([p["false_alarm_rate"] for p in pts], [p["detection_rate"] for p in pts], s=18,
               color="#495057")
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: p["false_alarm_rate"])
    if front:
        ax.plot([p["false_alarm_rate"] for p in front], [p["detection_rate"] for p in front],
                color="#1971c2", label="Pareto front")
    for p in pts:
        if "warning" in p["params"] and len(p["params"]) == 1:
            ax.annotate(f"{p['params']['warning']:g}", (p["false_alarm_rate"], p["detection_rate"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("runs with a false alarm (decoys)")
    ax.set_ylabel("genuine convergences detected")
    ax.set_title("Detection against false alarms" + (" (swept settings)" if summary["sweep"]
                                                     else " (warning threshold)"))
    if front:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "tradeoff.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    if ttd_ticks:
        hi = max(ttd_ticks)
        ax.hist(ttd_ticks, bins=[x * 0.5 for x in range(int(2 * min(hi, 40)) + 2)],
                color="#1971c2")
    ax.set_xlabel("ticks from onset to alert")
    ax.set_ylabel("convergences")
    med = summary.get("median_time_to_detect_ticks")
    ax.set_title(f"Time to detect (median {med} ticks)" if med is not None else "Time to detect")
    fig.tight_layout()
    paths.append(out / "time_to_detect.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
