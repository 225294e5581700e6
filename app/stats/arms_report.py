"""The report of a multi-arm study: the ranking (table and forest plot) and every arm pair's tables.

``render_arms_report(stats, title=...)`` takes the dict of
:func:`app.stats.arms.compute_arms`. The forest plot is drawn with
matplotlib (Agg backend, bundled fonts) as the analyses' plots are, and
embedded as a PNG ``data:`` URL, so the page stays one self-contained file.
``forest_plot_png`` gives the same plot as bytes (the docs' figure).
"""
from __future__ import annotations

import base64
import csv
import io

from app.stats.report import COLORS, _environment


def forest_plot_png(ranking: dict, *, title: str | None = None, dpi: int = 100) -> bytes:
    """Each arm's log-strength with its bootstrap interval, best first, and the tie parameter in the caption."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    arms = sorted(ranking["arms"], key=lambda a: (a["rank"] is None, a["rank"] or 0))
    fig = Figure(figsize=(5.6, 0.55 * len(arms) + 1.3), dpi=dpi)
    ax = fig.subplots()
    ys = list(range(len(arms)))[::-1]
    for y, arm in zip(ys, arms):
        if arm["theta"] is None:
            continue
        lo, hi = arm["ci"]
        if lo is not None:
            ax.plot([lo, hi], [y, y], color=COLORS["a"], linewidth=2.2, solid_capstyle="butt")
        ax.plot([arm["theta"]], [y], "o", color=COLORS["a"], markersize=7)
    ax.axvline(0.0, color="#888888", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([a["arm"] for a in arms])
    ax.set_xlabel("log-strength (mean 0 over the arms), 95% bootstrap interval")
    tie = ranking.get("tie") or {}
    if tie.get("nu") is not None:
        ci = tie.get("ci") or [None, None]
        extra = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else ""
        ax.set_title(title or f"Davidson model; tie parameter nu = {tie['nu']:.2f}{extra}", fontsize=10)
    ax.grid(axis="x", color="#e4e4e4")
    ax.set_axisbelow(True)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def arms_table2_csv(stats: dict) -> str:
    """Every arm pair's threshold table in one CSV: arm_a, arm_b, then the two-arm table's columns."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arm_a", "arm_b", "threshold_percent", "a_percent", "a_pairs", "a_ci_low", "a_ci_high",
                     "b_percent", "b_pairs", "b_ci_low", "b_ci_high", "none_percent", "none_pairs", "none_ci_low",
                     "none_ci_high", "n_pairs", "sign_test_p", "sign_test_p_holm_all"])

    def pct(v):
        return "" if v is None else f"{100 * v:.1f}"

    for entry in stats["arm_pairs"]:
        a, b = entry["arms"]
        for row in entry["thresholds"]:
            cells = [a, b, f"{100 * row['threshold']:g}"]
            for key in (a, b, "none"):
                lo, hi = row["ci"][key]
                cells += [f"{row['percent'][key]:.1f}", row["counts"][key], pct(lo), pct(hi)]
            cells += [entry["n_pairs"], "" if row["sign_test_p"] is None else f"{row['sign_test_p']:.6g}",
                      "" if row["sign_test_p_holm_all"] is None else f"{row['sign_test_p_holm_all']:.6g}"]
            writer.writerow(cells)
    return buf.getvalue()


def render_arms_report(stats: dict, *, title: str, study: dict | None = None) -> str:
    ranking = stats["ranking"]
    plot = None
    if ranking.get("exists"):
        plot = "data:image/png;base64," + base64.b64encode(forest_plot_png(ranking)).decode("ascii")
    return _environment().get_template("report/arms.html").render(
        title=title, s=stats, r=ranking, forest_plot=plot, study=study, colors=COLORS,
        table_csv="data:text/csv;base64," + base64.b64encode(arms_table2_csv(stats).encode()).decode("ascii"))
