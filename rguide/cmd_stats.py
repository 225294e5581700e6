"""``rguide stats`` (preference statistics of a votes CSV) and ``rguide power`` (planning a study).

Both read plain files and call the pure functions of ``app.stats``; see
docs/statistics.md for the definitions, the tests and the JSON layout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from rguide.cli import CLIError

DEFAULT_RATERS = "5,10,15,20,25,30,40"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats", help="threshold table, significance tests, agreement and report of a pairwise survey",
        description="Reads a votes CSV (at least pair_id,rater_id,choice; choice is the name of method A, of "
                    "method B, or 'same') and prints the paper's threshold table with sign tests, answer shares "
                    "with exact and cluster-bootstrap tests, agreement, position bias, response times and "
                    "exclusions. A malformed file is refused (exit status 2) with the row named; no output "
                    "file is written then.")
    p.add_argument("votes", type=Path, help="votes CSV")
    p.add_argument("--thresholds", default="0.5,0.6,0.7,0.8",
                   help="comma-separated thresholds in [0.5, 1] (values above 1 are read as percent)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    p.add_argument("--html", type=Path, default=None, help="write the HTML report to this file")
    p.add_argument("--title", default=None, help="report title (default: the CSV's name)")
    p.add_argument("--images", type=Path, default=None,
                   help="JSON mapping pair_id to [URL of A's image, URL of B's image] for the report")
    p.add_argument("--export-csv", type=Path, default=None,
                   help="write the votes as a tidy long-format CSV with exclusion flags")
    p.add_argument("--table2-csv", type=Path, default=None,
                   help="write the threshold table (the paper's Table 2) with 95%% intervals as CSV")
    p.add_argument("--table2-tex", type=Path, default=None, help="write the same table as a LaTeX table (booktabs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cluster bootstrap")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates (0: off)")
    p.add_argument("--methods", default="robust,vanilla", help="names of methods A and B as used in 'choice'")
    p.add_argument("--max-attention-failures", type=int, default=0,
                   help="exclude raters who fail more attention checks than this")
    p.add_argument("--min-side-answers", type=int, default=10,
                   help="side answers a rater needs before 'always picks one side' is reported")
    p.add_argument("--fast-ms", type=float, default=1000.0, help="answers faster than this count as fast")
    p.add_argument("--arms", default=None,
                   help="a multi-arm file (columns arm_a, arm_b): the arms in the order to report them "
                        "(default: as they first appear)")
    p.add_argument("--forest-png", type=Path, default=None,
                   help="a multi-arm file: write the ranking's forest plot as a PNG")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_stats)

    p = sub.add_parser(
        "power", help="pairs and raters per pair needed to detect a preference share",
        description="Sample sizes for a planned pairwise study: pairs needed at the answer level (binomial test "
                    "with a design effect 1 + (k-1)*ICC for k side answers per pair) and at the pair level (exact "
                    "sign test at 50%% under a beta-binomial model), for several numbers of raters per pair. "
                    "The ICC (and the 'same' share) can be estimated from a pilot's votes.")
    p.add_argument("--share", type=float, default=None,
                   help="share of side answers for method A to detect, e.g. 0.555 (default: the pilot's)")
    p.add_argument("--icc", type=float, default=None, help="intra-pair correlation (default: the pilot's)")
    p.add_argument("--pilot", type=Path, default=None, help="votes CSV of a pilot study")
    p.add_argument("--same-share", type=float, default=None,
                   help="expected share of 'same' answers (default: the pilot's, else 0)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--raters", default=DEFAULT_RATERS, help="comma-separated raters-per-pair values to plan for")
    p.add_argument("--pairs", type=int, default=None,
                   help="also report the raters per pair needed (answer level) with this many pairs")
    p.add_argument("--methods", default="robust,vanilla", help="names of methods A and B in the pilot's CSV")
    p.add_argument("--arms", default=None,
                   help="rank K arms instead: their names (comma-separated) or their number; a multi-arm --pilot "
                        "(columns arm_a, arm_b) gives them, with their strengths, tie parameter and clustering")
    p.add_argument("--design", default="all_pairs", help="with --arms: all_pairs, reference or balanced_incomplete")
    p.add_argument("--reference-arm", default=None, help="with --design reference: the reference arm (default first)")
    p.add_argument("--pairs-per-item", type=int, default=None, help="with --design balanced_incomplete")
    p.add_argument("--width", type=float, default=0.25,
                   help="with --arms: wanted half-width of each arm's 95%% interval of log-strength")
    p.add_argument("--strengths", default=None,
                   help="with --arms and no pilot: assumed log-strengths, comma-separated (default: all 0)")
    p.add_argument("--nu", type=float, default=None, help="with --arms and no pilot: tie parameter (default 0.7)")
    p.add_argument("--rho", type=float, default=None,
                   help="with --arms: within-item correlation of answers, DE = 1 + (m-1) rho (default: the "
                        "pilot's, else 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pilot's bootstrap")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_power)


# -- helpers ---------------------------------------------------------------------------------

def _methods(text: str) -> tuple[str, str]:
    parts = [s.strip() for s in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise CLIError(f"--methods {text!r}: give two names, e.g. robust,vanilla")
    return parts[0], parts[1]


def parse_thresholds(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--thresholds {text!r}: write comma-separated numbers such as 0.5,0.6,0.7,0.8") from None
    if not values:
        raise CLIError("--thresholds: give at least one threshold")
    return [v / 100 if v > 1 else v for v in values]


def _read_votes(path: Path, methods: tuple[str, str], flag: str = "votes"):
    from app.stats.votes import read_votes_csv

    if not path.is_file():
        raise CLIError(f"{flag} file {str(path)!r} does not exist")
    try:
        return read_votes_csv(path, method_a=methods[0], method_b=methods[1])
    except ValueError as exc:  # VoteFormatError names the row, the line and the column
        raise CLIError(str(exc)) from None


def _check_output(path: Path | None, flag: str) -> None:
    if path is not None and not path.parent.is_dir():
        raise CLIError(f"{flag} {str(path)!r}: directory {str(path.parent)!r} does not exist")


def _load_images(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"--images file {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CLIError(f"--images {str(path)!r}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CLIError("--images: expected a JSON object mapping pair_id to [URL of A, URL of B]")
    return data


# -- rguide stats ----------------------------------------------------------------------------

def run_stats(args: argparse.Namespace) -> int:
    from app.stats.export import stats_json, table2_csv, table2_latex, tidy_votes_csv, write_atomic
    from app.stats.summary import compute_all

    methods = _methods(args.methods)
    thresholds = parse_thresholds(args.thresholds)
    if args.bootstrap < 0:
        raise CLIError("--bootstrap must be >= 0")
    for path, flag in ((args.out, "--out"), (args.html, "--html"), (args.export_csv, "--export-csv"),
                       (args.table2_csv, "--table2-csv"), (args.table2_tex, "--table2-tex")):
        _check_output(path, flag)
    images = _load_images(args.images) if args.images is not None else None
    votes = _read_votes(args.votes, methods)
    from app.stats.arms import is_multi_arm

    if is_multi_arm(votes):
        return run_arms_stats(args, votes, thresholds)
    if args.forest_png is not None or args.arms is not None:
        raise CLIError("--arms and --forest-png need a multi-arm votes file (columns arm_a and arm_b)")

    from tqdm import tqdm

    bar = tqdm(total=args.bootstrap, desc="bootstrap", unit="rep", file=sys.stderr,
               disable=True if args.no_progress or args.bootstrap == 0 else None, leave=False)
    try:
        stats = compute_all(votes, thresholds=thresholds, seed=args.seed, n_boot=args.bootstrap,
                            method_a=methods[0], method_b=methods[1],
                            max_attention_failures=args.max_attention_failures,
                            min_side_answers=args.min_side_answers, fast_ms=args.fast_ms, progress=bar.update)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    raw = args.votes.read_bytes()
    stats["input"] = {"path": str(args.votes), "sha256": hashlib.sha256(raw).hexdigest(), "n_votes": len(votes)}

    # Render everything before writing anything, so an error leaves no output behind.
    outputs: list[tuple[Path, str]] = []
    if args.out is not None:
        outputs.append((args.out, stats_json(stats)))
    if args.html is not None:
        from app.stats.report import render_report

        try:
            html = render_report(stats, title=args.title or f"Preference study: {args.votes.name}", images=images)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        outputs.append((args.html, html))
    if args.export_csv is not None:
        outputs.append((args.export_csv, tidy_votes_csv(votes, max_attention_failures=args.max_attention_failures)))
    if args.table2_csv is not None:
        outputs.append((args.table2_csv, table2_csv(stats)))
    if args.table2_tex is not None:
        outputs.append((args.table2_tex, table2_latex(stats)))
    for path, text in outputs:
        try:
            write_atomic(path, text)
        except OSError as exc:
            raise CLIError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None

    if args.json:
        sys.stdout.write(stats_json(stats))
    else:
        print(format_text(stats))
        for path, _ in outputs:
            print(f"wrote {path}")
    return 0


def run_arms_stats(args: argparse.Namespace, votes: list, thresholds: list[float]) -> int:
    """``rguide stats`` on a multi-arm file: every arm pair's tables and the Davidson ranking."""
    from app.stats.arms import compute_arms
    from app.stats.arms_report import arms_table2_csv, forest_plot_png, render_arms_report
    from app.stats.export import stats_json, tidy_votes_csv, write_atomic
    from model_core.files import atomic_write_bytes

    if args.images is not None or args.table2_tex is not None:
        raise CLIError("--images and --table2-tex are for two-arm files; a multi-arm report shows the ranking")
    _check_output(args.forest_png, "--forest-png")
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
    from tqdm import tqdm

    bar = tqdm(total=args.bootstrap, desc="ranking bootstrap", unit="rep", file=sys.stderr,
               disable=True if args.no_progress or args.bootstrap == 0 else None, leave=False)
    try:
        stats = compute_arms(votes, thresholds=thresholds, seed=args.seed, n_boot=args.bootstrap, arms=arms,
                             max_attention_failures=args.max_attention_failures,
                             min_side_answers=args.min_side_answers, fast_ms=args.fast_ms, progress=bar.update)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    raw = args.votes.read_bytes()
    stats["input"] = {"path": str(args.votes), "sha256": hashlib.sha256(raw).hexdigest(), "n_votes": len(votes)}
    outputs: list[tuple[Path, str | bytes]] = []
    if args.out is not None:
        outputs.append((args.out, stats_json(stats)))
    if args.html is not None:
        outputs.append((args.html, render_arms_report(stats, title=args.title or f"Multi-arm study: {args.votes.name}")))
    if args.export_csv is not None:
        outputs.append((args.export_csv, tidy_votes_csv(votes, max_attention_failures=args.max_attention_failures)))
    if args.table2_csv is not None:
        outputs.append((args.table2_csv, arms_table2_csv(stats)))
    if args.forest_png is not None:
        if not stats["ranking"]["exists"]:
            raise CLIError(f"--forest-png: no ranking to plot ({stats['ranking']['reason']})")
        outputs.append((args.forest_png, forest_plot_png(stats["ranking"])))
    for path, body in outputs:
        try:
            if isinstance(body, bytes):
                atomic_write_bytes(path, body)
            else:
                write_atomic(path, body)
        except OSError as exc:
            raise CLIError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    if args.json:
        sys.stdout.write(stats_json(stats))
    else:
        print(format_arms_text(stats))
        for path, _ in outputs:
            print(f"wrote {path}")
    return 0


def format_arms_text(stats: dict) -> str:
    r = stats["ranking"]
    lines = [f"{len(stats['arms'])} arms, {stats['n_items']} items, {stats['n_pairs']} pairs, {stats['n_raters']} "
             f"raters, {stats['n_answers']} answers", ""]
    if r["exists"]:
        lines.append(f"Ranking ({r['model']}): log-strength, centred; 95% bootstrap interval")
        for a in sorted(r["arms"], key=lambda a: a["rank"]):
            ci = a["ci"]
            interval = "n/a" if ci[0] is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
            lines.append(f"  {a['rank']}. {a['arm']:<16} {a['theta']:+.3f} {interval}   wins {a['wins']}, "
                         f"losses {a['losses']}, same {a['same']}")
        tie = r["tie"]
        ci = tie["ci"]
        lines.append(f"  tie parameter nu {tie['nu']:.3f}" + ("" if ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"))
    else:
        lines.append(f"No ranking: {r['reason']}")
    lines += ["", "Arm pairs (primary sign test at 50%; Holm across arm pairs):"]
    for e in stats["arm_pairs"]:
        a, b = e["arms"]
        pr = e["primary"]
        lines.append(f"  {a} vs {b}: answers {a} {_pct(e['answer_shares'][a])}, {b} {_pct(e['answer_shares'][b])}, "
                     f"same {_pct(e['answer_shares']['same'])}; items {pr['n_a']} : {pr['n_b']} : {pr['n_none']}, "
                     f"p = {_p(pr['p'])}, Holm {_p(pr['p_holm_arm_pairs'])}")
    return "\n".join(lines)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _p(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2e}" if x < 1e-3 else f"{x:.4f}"


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return "n/a"
    return f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def format_text(s: dict) -> str:
    a, b = s["methods"]["a"], s["methods"]["b"]
    rpp = s["raters_per_pair"]
    lines = [
        (f"{s['n_pairs']} pairs, {s['n_raters']} raters, {s['n_answers']} answers; raters per pair "
        f"{rpp['min']}-{rpp['max']} (mean {rpp['mean']:.2f})"),
        "",
        (f"{'Threshold':>9}  {a.capitalize():>8}  {b.capitalize():>8}  {'No Preference':>13}  {'pairs A:B':>9}  "
        f"{'sign p':>9}  {'Holm p':>9}  {'ties/2 p':>9}"),
    ]
    for row in s["thresholds"]:
        pct = row["percent"]
        lines.append(f"{row['threshold'] * 100:>8g}%  {pct[a]:>7.1f}%  {pct[b]:>7.1f}%  {pct['none']:>12.1f}%  "
                     f"{row['counts'][a]:>4}:{row['counts'][b]:<4}  {_p(row['sign_test_p']):>9}  "
                     f"{_p(row['sign_test_p_holm']):>9}  {_p(row['ties_as_half']['p']):>9}")
    pr = s["primary"]
    lines += ["", f"Primary: {pr['test']}.",
              (f"  {pr['n_a']} vs {pr['n_b']} pairs ({pr['n_none']} without preference): share {_pct(pr['share_a_among_preferred'])} "
              f"{_ci(pr['ci'])}, p = {_p(pr['p'])}")]
    sh, cnt = s["answer_shares"], s["answer_counts"]
    lvl = s["answer_level"]
    boot = lvl["bootstrap"]
    lines += ["", (f"Answers: {a} {_pct(sh[a])} ({cnt[a]}), {b} {_pct(sh[b])} ({cnt[b]}), same {_pct(sh['same'])} "
                  f"({cnt['same']})"),
              (f"  {a} among side answers {_pct(lvl['share_a_among_sides'])}: exact binomial p = "
              f"{_p(s['answer_binomial_p'])} {_ci(lvl['binomial']['ci'])} (answers as independent)")]
    if "share_a_among_sides" in boot:
        lines.append(f"  two-way cluster bootstrap ({boot['n_boot']} replicates, seed {boot['seed']}): "
                     f"{_ci(boot['share_a_among_sides']['ci'])}, p ~ {_p(lvl['bootstrap_wald_p'])}")
    ag = s["agreement"]

    def num(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines += ["", (f"Agreement: Krippendorff alpha {num(ag['krippendorff_alpha'])} (sides only "
                  f"{num(ag['krippendorff_alpha_sides'])}), Gwet AC1 {num(ag['gwet_ac1'])} (sides only "
                  f"{num(ag['gwet_ac1_sides'])})")]
    pb = s["position_bias"]
    if pb["available"]:
        lines.append(f"Position bias: left chosen in {_pct(pb['share_left'])} of {pb['n_side_answers']} side answers, "
                     f"p = {_p(pb['binomial_p'])}; {len(pb['raters_always_one_side'])} of {pb['raters_checked']} "
                     f"raters always chose one side")
    else:
        lines.append(f"Position bias: not available ({pb['reason']})")
    rt = s["response_time"]
    if rt["available"]:
        lines.append(f"Response time: median {rt['median'] / 1000:.2f} s (IQR {rt['q1'] / 1000:.2f}-"
                     f"{rt['q3'] / 1000:.2f} s); {rt['n_fast']} answers under {rt['fast_ms']:g} ms")
    ex = s["exclusions"]
    lines.append(f"Exclusions: {ex['n_votes_input']} votes given, {ex['n_votes_used']} used "
                 f"({ex['n_votes_flagged']} flagged, {ex['n_attention_check_votes']} on attention-check pairs, "
                 f"{ex['n_votes_from_excluded_raters']} from {len(ex['excluded_raters'])} excluded raters)")
    return "\n".join(lines)


# -- rguide power ----------------------------------------------------------------------------

def run_power(args: argparse.Namespace) -> int:
    from app.stats import power as pw
    from app.stats.tables import pair_counts

    methods = _methods(args.methods)
    pilot = None
    if args.arms is not None:
        return run_power_arms(args, methods)
    if args.pilot is not None:
        votes = _read_votes(args.pilot, methods, flag="--pilot")
        from app.stats.arms import is_multi_arm

        if is_multi_arm(votes):
            return run_power_arms(args, methods, votes)
        from app.stats.exclusions import apply_exclusions

        kept = apply_exclusions(votes).kept
        if not kept:
            raise CLIError("--pilot: no votes left after exclusions")
        pilot = pw.pilot_summary(pair_counts(kept, *[m.lower() for m in methods]))
    share = args.share if args.share is not None else (pilot or {}).get("share_a_among_sides")
    icc = args.icc if args.icc is not None else (pilot or {}).get("icc")
    same = args.same_share if args.same_share is not None else ((pilot or {}).get("same_share") or 0.0)
    if share is None:
        raise CLIError("give --share (the preference share to detect) or a --pilot to take it from")
    if icc is None:
        raise CLIError("give --icc or a --pilot to estimate it from" +
                       (f" (the pilot's ICC is undefined: {pilot.get('reason')})" if pilot else ""))
    try:
        raters = [int(x) for x in args.raters.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--raters {args.raters!r}: write comma-separated integers") from None
    if not raters or min(raters) < 1:
        raise CLIError("--raters: give one or more integers >= 1")
    try:
        table = pw.planning_table(share, icc, raters=raters, alpha=args.alpha, power=args.power, same_share=same)
        fixed = (pw.raters_needed(share, args.pairs, icc, alpha=args.alpha, power=args.power, same_share=same)
                 if args.pairs is not None else None)
        n0 = pw.independent_answers_needed(share, alpha=args.alpha, power=args.power)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    from app.stats.summary import jsonable

    result = jsonable({"share": share, "icc": icc, "same_share": same, "alpha": args.alpha, "power": args.power,
                       "independent_answers_needed": n0, "pilot": pilot, "plans": table,
                       "fixed_pairs": None if fixed is None else {"n_pairs": args.pairs, **fixed}})
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    src = " (from the pilot)" if pilot else ""
    print(f"Detect a share of {share:.3f} for {methods[0]} among side answers against 0.5; two-sided alpha "
          f"{args.alpha:g}, power {args.power:g}; ICC {icc:.3f}{src if args.icc is None else ''}; "
          f"'same' share {same:.2f}.")
    print(f"Independent side answers needed: {n0:.1f}")
    print()
    print(f"{'raters/pair':>11}  {'design eff.':>11}  {'pairs (answers)':>15}  {'answers':>8}  {'pairs (sign test)':>17}")
    for row in table:
        pp = row["pairs_pair_level"]
        print(f"{row['raters_per_pair']:>11}  {row['design_effect']:>11.2f}  {row['pairs_answer_level']:>15}  "
              f"{row['answers_answer_level']:>8}  {('n/a' if pp is None else pp):>17}")
    if fixed is not None:
        m = fixed["raters_per_pair"]
        print()
        print(f"With {args.pairs} pairs: " + (f"{m} raters per pair (answer level)" if m is not None
                                              else fixed["reason"]))
    return 0


def run_power_arms(args: argparse.Namespace, methods: tuple[str, str], votes: list | None = None) -> int:
    """``rguide power --arms``: items and raters per pair to rank K arms to a given interval width."""
    import math

    from app.stats import power_arms as pa
    from app.stats.summary import jsonable
    from model_core.designs import DESIGNS

    if args.design not in DESIGNS:
        raise CLIError(f"--design {args.design!r}: choose from {', '.join(DESIGNS)}")
    try:
        raters = [int(x) for x in args.raters.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--raters {args.raters!r}: write comma-separated integers") from None
    if not raters or min(raters) < 1:
        raise CLIError("--raters: give one or more integers >= 1")
    pilot = None
    if votes is None and args.pilot is not None:
        votes = _read_votes(args.pilot, methods, flag="--pilot")
    if votes is not None:
        from app.stats.arms import is_multi_arm, oriented_votes, rank_votes
        from app.stats.ranking import ranking_json

        if not is_multi_arm(votes):
            raise CLIError("--pilot: --arms needs a multi-arm pilot (columns arm_a and arm_b)")
        given = [a.strip() for a in args.arms.split(",")] if args.arms and not args.arms.isdigit() else None
        try:
            order, kept, _ = oriented_votes(votes, given)
        except ValueError as exc:
            raise CLIError(f"--pilot: {exc}") from None
        # The design effect comes from a bootstrap over items alone: the two-way (items and raters)
        # bootstrap of the report is conservative (it counts the answer-level noise twice), which
        # would inflate every plan. Raters are one cluster here.
        from dataclasses import replace as _replace

        fit_items = rank_votes([_replace(v, rater_id="all") for v in kept], order, n_boot=1000, seed=args.seed)
        fit_report = rank_votes(kept, order, n_boot=1000, seed=args.seed)
        m_pilot = len(kept) / max(len({v.pair_id for v in kept}), 1)
        pilot = pa.pilot_design_effect(fit_items, fit_report, ranking_json(fit_report)["exists"], m_pilot)
        if not pilot["available"]:
            raise CLIError(f"--pilot: cannot plan from it: {pilot['reason']}")
        names, theta, nu = order, pilot["theta"], pilot["nu"]
        rho = args.rho if args.rho is not None else pilot["rho"]
        report_factor = pilot["report_factor"]
    else:
        if args.arms.isdigit():
            names = [f"arm{i + 1}" for i in range(int(args.arms))]
        else:
            names = [a.strip() for a in args.arms.split(",") if a.strip()]
        if args.strengths:
            try:
                theta = [float(x) for x in args.strengths.split(",")]
            except ValueError:
                raise CLIError(f"--strengths {args.strengths!r}: write comma-separated numbers") from None
            if len(theta) != len(names):
                raise CLIError(f"--strengths: {len(theta)} values for {len(names)} arms")
        else:
            theta = [0.0] * len(names)
        nu = args.nu if args.nu is not None else 0.7
        rho = args.rho if args.rho is not None else 0.0
        report_factor = 2.0  # no pilot: the two-way bootstrap's usual doubling of the answer-level variance
    if not nu > 0:
        raise CLIError("--nu must be positive")
    if rho < 0:
        raise CLIError("--rho must be >= 0")
    reference = 0
    if args.reference_arm is not None:
        if args.reference_arm not in names:
            raise CLIError(f"--reference-arm {args.reference_arm!r} is not one of {', '.join(names)}")
        reference = names.index(args.reference_arm)
    try:
        rows = pa.plan_ranking(theta, math.log(nu), width=args.width, design=args.design, raters=raters, rho=rho,
                               reference=reference, pairs_per_item=args.pairs_per_item, report_factor=report_factor)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    result = jsonable({"arms": names, "theta": theta, "nu": nu, "rho": rho, "report_factor": report_factor,
                       "design": args.design,
                       "width": args.width, "pilot": pilot, "plans": rows})
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
        return 0
    src = "the pilot's" if pilot else "assumed"
    print(f"Rank {len(names)} arms ({', '.join(names)}) with design {args.design}: every arm's 95% interval of "
          f"log-strength within +/- {args.width:g}. {src.capitalize()} strengths "
          f"{', '.join(f'{t:+.2f}' for t in theta)}, tie parameter {nu:.2f}, within-item correlation {rho:.3f}"
          + (f" (pilot design effect {pilot['design_effect']:.2f} at {pilot['raters_per_pair']:.1f} raters per pair)"
             if pilot else "") + f"; the report's two-way bootstrap widens variances {report_factor:.2f}x"
          + (" (from the pilot)." if pilot else " (assumed; give a pilot to measure it)."))
    print()
    print(f"{'raters/pair':>11}  {'design eff.':>11}  {'items':>7}  {'pairs':>7}  {'answers':>8}  {'widest +/-':>10}")
    for row in rows:
        if row["n_items"] is None:
            print(f"{row['raters_per_pair']:>11}  {row['reason']}")
            continue
        print(f"{row['raters_per_pair']:>11}  {row['design_effect']:>11.2f}  {row['n_items']:>7}  {row['pairs']:>7}  "
              f"{row['answers']:>8}  {row['widest_half_width']:>10.3f}")
    return 0
