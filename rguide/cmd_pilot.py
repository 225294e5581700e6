"""``rguide pilot``: a machine-rater pilot of a pairwise study, before paying human raters.

Samples the preset's comparison as seed-matched pairs, lets the machine judge
(``model_core.evaluation.judge``) answer the survey's question through
simulated raters, and runs the survey's statistics and the power planner on
those answers. The votes are written to their own CSV with ``machine-`` rater
ids; they are never stored with a study's human votes. docs/survey.md says
what the proxy can and cannot tell.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rguide.cli import CLIError

# How the core's setting names are spelled on this command line.
SETTING_FLAGS = {"per_class": "--per-class", "scales": "--scale", "judge_weights": "--judge",
                 "real_data": "--real-data", "realism_weight": "--realism-weight", "same_margin": "--same-margin",
                 "noise": "--noise", "raters": "--raters", "k": "--k", "preset": "--preset",
                 "steps": "--steps", "sampler": "--sampler", "arms": "--arms", "design": "--design",
                 "reference_arm": "--reference-arm", "pairs_per_item": "--pairs-per-item"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pilot", help="machine-rater pilot: judge seed-matched pairs, then statistics and study size",
        description="For every label and seed, samples the preset's comparison (robust vs vanilla by default) "
                    "as a seed-matched pair, scores each image by the judge network's log-probability of the "
                    "requested class plus the log realism score of Kynkaanniemi et al. against real images, "
                    "simulates raters who answer Left/Right/Same around the judge's preference, and runs the "
                    "survey's statistics and the power planner on those machine votes. Resumable: samples are "
                    "cached in OUT/samples.")
    p.add_argument("--preset", default=None, help="default: the default preset")
    p.add_argument("--per-class", type=int, default=10, help="pairs per class (seeds SEED .. SEED+N-1)")
    p.add_argument("--labels", default=None, help="comma-separated class indices or names (default: all)")
    p.add_argument("--seed", type=int, default=0, help="first seed; also seeds the simulated raters")
    p.add_argument("--steps", default=None, help="steps spec (default: the preset's)")
    p.add_argument("--sampler", default=None)
    p.add_argument("--scale", default=None, help="method=scale,... for the comparison's arms (default: preset's)")
    p.add_argument("--arms", default=None,
                   help="a multi-arm pilot: name=method:scale,... (e.g. robust=robust:1,vanilla=vanilla:0.5,"
                        "strong=robust:3); 'none' for no guidance. Default: the preset's comparison")
    p.add_argument("--design", default="all_pairs", help="with --arms: all_pairs, reference or balanced_incomplete")
    p.add_argument("--reference-arm", default=None, help="with --design reference: the reference arm")
    p.add_argument("--pairs-per-item", type=int, default=None, help="with --design balanced_incomplete")
    p.add_argument("--judge", default=None,
                   help="judge network file with features and class logits (default: the preset's digit CNN)")
    p.add_argument("--real-data", default=None, help="real images for the realism score (default: held-out)")
    p.add_argument("--realism-weight", type=float, default=1.0, help="weight of log realism against log p(y|x)")
    p.add_argument("--same-margin", type=float, default=0.5, help="|u_A - u_B| below this is answered 'same'")
    p.add_argument("--noise", type=float, default=1.0, help="scale of each simulated rater's logistic noise")
    p.add_argument("--raters", type=int, default=5, help="simulated raters per pair")
    p.add_argument("--k", type=int, default=3, help="neighbours of the realism score")
    p.add_argument("--plan-raters", default="5,10,15,20,25,30,40", help="raters per pair for the planning table")
    p.add_argument("--study", default=None,
                   help="run the pilot on this survey study's own pairs on the service (--url) instead of sampling "
                        "here: its machine votes are stored beside the study, apart from the human votes")
    p.add_argument("--url", default=None, help="with --study: the service (default $RGUIDE_URL or "
                                               "http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="with --study: a researcher key (default $RGUIDE_API_KEY)")
    p.add_argument("--out", type=Path, required=True, help="folder for images, votes, statistics and report")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_pilot)


def _scales(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise CLIError(f"--scale {text!r}: write method=scale pairs such as robust=2,vanilla=2") from None
    return out


def _arms(text: str | None) -> list[dict] | None:
    if not text:
        return None
    arms = []
    for part in text.split(","):
        name, _, setting = part.strip().rpartition("=")
        method, _, scale = setting.partition(":")
        try:
            arms.append({"name": name.strip() or None, "method": method.strip(),
                         "scale": float(scale) if scale.strip() else None})
        except ValueError:
            raise CLIError(f"--arms {text!r}: write name=method:scale,... such as robust=robust:1,none=none") from None
    return arms


def _labels(text: str | None) -> list | None:
    if text is None:
        return None
    return [int(s) if s.strip().isdigit() else s.strip() for s in text.split(",") if s.strip()]


def votes_from_pilot(result: dict) -> list:
    """The pilot's simulated answers as survey votes (rater ids ``machine-NN``, study id ``machine-pilot``)."""
    from app.stats.votes import SAME, Vote

    votes = []
    for rec in result["pairs"]:
        # A multi-arm pilot's pair names its two arms; a classic one compares the two methods.
        a, b = rec.get("arms") or result["methods"]
        arms = {"arm_a": a, "arm_b": b} if "arms" in rec else {}
        for j, ans in enumerate(rec["answers"]):
            choice = {"a": a, "b": b, "same": SAME}[ans["answer"]]
            votes.append(Vote(pair_id=rec["pair_id"], rater_id=f"machine-{j + 1:02d}", choice=choice,
                              study_id="machine-pilot", label=rec["label"], class_name=rec["class_name"],
                              seed=rec["seed"], robust_side=ans["side_a"], position=None, **arms))
    return votes


STUDY_ONLY_SAMPLING = ("preset", "per_class", "labels", "steps", "sampler", "scale", "arms", "judge", "real_data")


def run_study_pilot(args: argparse.Namespace) -> int:
    """``--study ID``: ask the service to run the pilot on the study's pairs, follow it, fetch its results."""
    import os
    import time
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    from rguide.remote_evaluate import _call

    base = (args.url or os.environ.get("RGUIDE_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = args.api_key or os.environ.get("RGUIDE_API_KEY")
    if not key:
        raise CLIError("--study needs a researcher key: --api-key KEY or $RGUIDE_API_KEY")
    defaults = {"per_class": 10, "design": "all_pairs"}
    given = [f"--{name.replace('_', '-')}" for name in STUDY_ONLY_SAMPLING
             if getattr(args, name, None) not in (None, defaults.get(name))]
    if given:
        raise CLIError(f"{', '.join(given)}: with --study the pilot judges the study's own images with the "
                       "preset's judge network; leave these out")
    body = {"raters": args.raters, "noise": args.noise, "same_margin": args.same_margin,
            "realism_weight": args.realism_weight, "k": args.k, "seed": args.seed}
    path = f"/v1/surveys/{args.study}/machine-votes"
    study = _call(base, key, "GET", f"/v1/surveys/{args.study}")
    if study["status"] == "generating":
        # The pilot judges the study's own images: wait for them, as the study page does.
        gen = tqdm(total=100, desc="generating the study's pairs", unit="%", disable=args.no_progress)
        while study["status"] == "generating":
            gen.n = round(100 * study["generation"]["progress"])
            gen.refresh()
            time.sleep(2.0)
            study = _call(base, key, "GET", f"/v1/surveys/{args.study}")
        gen.close()
    if study["status"] == "failed":
        raise CLIError(f"study {args.study} failed: {study.get('error')}")
    got = _call(base, key, "GET", path)
    if got["status"] in ("queued", "running", "succeeded") and got["settings"] != body:
        # One pilot per study: follow the one there (asked for at creation, say) rather than refuse.
        print(f"following the study's existing pilot (settings {got['settings']}); DELETE {path} to run another")
    else:
        got = _call(base, key, "POST", path, body)
    print(f"machine-rater pilot of study {args.study} (job {got['job_id']}, {got['status']}); Ctrl-C stops following, "
          "the job goes on")
    bar = tqdm(total=max(got["progress_total"], 1), desc="machine votes", unit="pair", disable=args.no_progress)
    try:
        while got["status"] in ("queued", "running"):
            bar.total = max(got["progress_total"], 1)
            bar.n = got["progress_step"]
            bar.refresh()
            time.sleep(1.0)
            got = _call(base, key, "GET", path)
    except KeyboardInterrupt:
        bar.close()
        print(f"\nstopped following; rguide pilot --study {args.study} --out {args.out} follows it again")
        return 130
    bar.n = bar.total
    bar.close()
    if got["status"] != "succeeded":
        raise CLIError(f"the pilot job {got['job_id']} {got['status']}: {got.get('error') or 'no error recorded'}")
    results = _call(base, key, "GET", f"/v1/surveys/{args.study}/machine-results")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine-results.json").write_text(json.dumps(results, indent=1) + "\n")
    for name, suffix in (("machine-votes.csv", "machine-votes?format=csv"), ("machine-report.html", "machine-report")):
        req = urllib.request.Request(f"{base}/v1/surveys/{args.study}/{suffix}",
                                     headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                (out / name).write_bytes(resp.read())
        except urllib.error.URLError as exc:
            raise CLIError(f"GET {suffix}: {exc}") from None
    from app.survey.report import machine_lines

    print(results["note"])
    for line in machine_lines(results):
        print("  " + line)
    print(f"wrote {out}/machine-results.json, machine-votes.csv, machine-report.html")
    return 0


def run_pilot(args: argparse.Namespace) -> int:
    if args.study:
        return run_study_pilot(args)
    from model_core.errors import SettingError
    from model_core.evaluation.judge import JudgeSettings
    from model_core.evaluation.pilot import PilotSettings, run_pilot as core_pilot

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        judge = JudgeSettings(realism_weight=args.realism_weight, same_margin=args.same_margin, noise=args.noise,
                              raters=args.raters, k=args.k, seed=args.seed)
        settings = PilotSettings(preset=args.preset or _default_preset(), per_class=args.per_class,
                                 labels=_labels(args.labels), seed=args.seed, steps=args.steps,
                                 sampler=args.sampler, scales=_scales(args.scale), judge=judge,
                                 judge_weights=args.judge, real_data=args.real_data, arms=_arms(args.arms),
                                 design=args.design, reference_arm=args.reference_arm,
                                 pairs_per_item=args.pairs_per_item)
        result = core_pilot(settings, args.out, device=args.device, progress=not args.no_progress)
    except SettingError as exc:
        raise CLIError(exc.render(SETTING_FLAGS)) from None
    except (KeyError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if "arms" in result:
        write_arms_outputs(result, args.out, plan_raters=args.plan_raters, seed=args.seed)
        s = result["summary"]
        print(f"{s['n_items']} items, {s['n_pairs']} arm pairs judged by {args.raters} simulated raters each")
        for name, arm in s["per_arm"].items():
            print(f"  {name:>12}: label accuracy {arm['label_accuracy']:.3f}, inside the real manifold "
                  f"{arm['inside_real_manifold']:.3f}, mean utility {arm['mean_u']:.2f}")
        print(f"wrote {args.out}/report.html, stats.json, power.json, votes.csv, pilot.json")
        return 0
    write_outputs(result, args.out, plan_raters=args.plan_raters, seed=args.seed,
                  progress=not args.no_progress)
    s = result["summary"]
    a, b = result["methods"]
    print(f"{s['n_pairs']} pairs, {args.raters} simulated raters each; the judge prefers {a} on "
          f"{s['judge_prefers'][a]:.1%} of pairs and {b} on {s['judge_prefers'][b]:.1%}")
    for m in (a, b):
        arm = s["per_arm"][m]
        print(f"  {m:>8}: label accuracy {arm['label_accuracy']:.3f}, inside the real manifold "
              f"{arm['inside_real_manifold']:.3f}, median realism {arm['median_realism']:.2f}")
    print(f"answers: {a} {s['answer_shares'][a]:.1%}, {b} {s['answer_shares'][b]:.1%}, "
          f"same {s['answer_shares']['same']:.1%}")
    print(f"wrote {args.out}/report.html, stats.json, power.json, votes.csv, pilot.json")
    return 0


def _default_preset() -> str:
    from model_core.presets import get_preset

    return get_preset(None).name


def _plan_raters(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--plan-raters {text!r}: write comma-separated integers") from None


def write_outputs(result: dict, out: Path, *, plan_raters: str, seed: int, progress: bool) -> None:
    """Votes CSV, statistics JSON, power plan and the HTML report, from the pilot's plain data."""
    from app.stats import machine
    from app.stats.export import stats_json, write_atomic, write_votes_csv
    from app.stats.report import render_report
    from app.stats.summary import jsonable
    from model_core.images import save_png

    a, b = result["methods"]
    votes = votes_from_pilot(result)
    write_votes_csv(out / "votes.csv", votes)
    got = machine.statistics(votes, method_a=a, method_b=b, seed=seed, plan_raters=_plan_raters(plan_raters),
                             provenance={k: result[k] for k in ("preset", "scales", "steps", "sampler", "settings",
                                                                "summary", "judge_weights", "code_version")})
    stats = got["stats"]
    write_atomic(out / "stats.json", stats_json(stats))
    write_atomic(out / "power.json", json.dumps(jsonable(got["power"]), indent=1))
    images = {}
    img_dir = out / "images"
    for rec, ia, ib in zip(result["pairs"], result["images"][a], result["images"][b]):
        pa, pb = img_dir / f"{rec['pair_id']}_{a}.png", img_dir / f"{rec['pair_id']}_{b}.png"
        save_png(ia, pa)
        save_png(ib, pb)
        images[rec["pair_id"]] = [f"images/{pa.name}", f"images/{pb.name}"]
    html = render_report(stats, title=f"Machine-rater pilot: {result['preset']} ({a} vs {b})", images=images)
    write_atomic(out / "report.html", html)


def write_arms_outputs(result: dict, out: Path, *, plan_raters: str, seed: int) -> None:
    """A multi-arm pilot's votes, statistics (every arm pair and the ranking), plan and report."""
    from app.stats import machine
    from app.stats.arms_report import render_arms_report
    from app.stats.export import stats_json, write_atomic, write_votes_csv
    from app.stats.summary import jsonable
    from model_core.images import save_png

    raters = _plan_raters(plan_raters)
    votes = votes_from_pilot(result)
    write_votes_csv(out / "votes.csv", votes)
    names = list(result["methods"])
    got = machine.statistics(votes, method_a=names[0], method_b=names[1], arms=names, design=result["design"],
                             seed=seed, plan_raters=raters,
                             provenance={k: result[k] for k in ("preset", "arms", "design", "steps", "sampler",
                                                                "settings", "summary", "judge_weights",
                                                                "code_version")})
    stats = got["stats"]
    write_atomic(out / "stats.json", stats_json(stats))
    write_atomic(out / "power.json", json.dumps(jsonable(got["power"]), indent=1))
    img_dir = out / "images"
    for j, (label, item_seed) in enumerate(result["items"]):
        for name in names:
            save_png(result["images"][name][j], img_dir / f"{result['preset']}-{label}-{item_seed}_{name}.png")
    html = render_arms_report(stats, title=f"Machine-rater pilot: {result['preset']} ({', '.join(names)})")
    write_atomic(out / "report.html", html)
