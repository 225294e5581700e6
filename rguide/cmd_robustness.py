"""``rguide robustness`` (the report of a preset's three defences under attack) and
``rguide classify`` (one or more PNGs by a defence: diffusion, vanilla or robust)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_core.errors import message
from model_core.robustness.threats import ATTACKS, DEFAULT_ATTACKS, DEFENCES, GRADIENTS, SANITY_EPS, SETTINGS
from rguide.cli import CLIError

FLAGS = {"attacks": "--attacks", "schedule": "--schedule", "preset": "--preset", "n": "--n",
         "timestep_policy": "--timestep-policy"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "robustness", help="clean and adversarial accuracy of a preset's three defences (transfer and white-box)",
        description="Attacks the preset's vanilla and robust classifiers (at t = 0) and its diffusion model used "
                    "as a classifier on N held-out images, in two settings reported apart: transfer (adversarial "
                    "images made on the vanilla classifier, shown to every defence) and adaptive white-box (each "
                    "defence's own gradients). eps in [0, 1] pixel units. Writes OUT/report.json, OUT/report.md "
                    "and OUT/per_sample.json and prints the Markdown with the sanity checks.")
    p.add_argument("--preset", default=None)
    p.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                   help=f"comma-separated, from: {', '.join(f'{k} ({v.summary})' for k, v in ATTACKS.items())}")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated: {', '.join(SETTINGS)}")
    p.add_argument("--defences", default=",".join(DEFENCES), help=f"comma-separated: {', '.join(DEFENCES)}")
    p.add_argument("--n", type=int, default=256, help="held-out images (the first N of a permutation seeded --seed)")
    p.add_argument("--seed", type=int, default=0, help="image choice, diffusion classifier draws, attack starts")
    p.add_argument("--schedule", default=None,
                   help="diffusion classifier schedule, e.g. 10:3,30 (default) or the paper's 50:5,500")
    p.add_argument("--attack-timesteps", type=int, default=None,
                   help="timesteps per class in the diffusion classifier's attack gradient (default: stage 1's)")
    p.add_argument("--eot", type=int, default=0, metavar="K",
                   help="white-box on the diffusion classifier with fresh draws at every pass, gradients averaged "
                        "over K passes (default: fixed draws, no EOT)")
    p.add_argument("--diffusion-gradients", default=None,
                   help="gradient estimators of the diffusion classifier's white-box rows, each its own row: "
                        "fixed, eot or fixed,eot (default: eot with --eot, else fixed)")
    p.add_argument("--diffusion-whitebox-n", type=int, default=None,
                   help="white-box attacks on the diffusion classifier use only the first this many images (cost)")
    p.add_argument("--diffusion-whitebox-steps", type=int, default=None,
                   help="at most this many PGD steps against the diffusion classifier (cost; stated in the report)")
    p.add_argument("--diffusion-whitebox-autoattack", action="store_true",
                   help="also run AutoAttack through the diffusion classifier (very slow on a CPU)")
    p.add_argument("--sanity-n", type=int, default=32, help="images for the eps-sweep and gradient sanity checks")
    p.add_argument("--sanity-eps", default=",".join(map(str, SANITY_EPS["linf"])),
                   help="radii of the Linf eps sweep ([0, 1] units)")
    p.add_argument("--sanity-eps-l2", default=",".join(map(str, SANITY_EPS["l2"])),
                   help="radii of the L2 eps sweep ([0, 1] units), run when an L2 attack is asked for")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-progress", action="store_true")
    w = p.add_argument_group("on the workers")
    w.add_argument("--on-workers", metavar="URL", default=None,
                   help="run the report on the service's workers (POST /v1/robustness-reports) and follow it")
    w.add_argument("--api-key", default=None, help="researcher key for --on-workers (default: $RGUIDE_API_KEY)")
    w.add_argument("--follow", metavar="ID", default=None, help="follow a report already submitted")
    p.set_defaults(func=run_robustness)

    p = sub.add_parser("classify", help="classify PNG images with a preset's diffusion model or classifiers",
                       description="Prints, per image, the predicted class and the class probabilities. "
                                   "--method diffusion uses the diffusion model as a classifier (staged "
                                   "elimination, seeded); vanilla and robust use the time-dependent classifiers "
                                   "at t = 0. Images must have the preset's size.")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--method", default="diffusion", choices=DEFENCES)
    p.add_argument("--preset", default=None)
    p.add_argument("--schedule", default=None, help="diffusion classifier schedule (default 10:3,30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_classify)


def _threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _names(text: str, allowed, flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise CLIError(f"{flag}: unknown {bad or 'nothing given'}; choose from {', '.join(allowed)}")
    return names


def run_robustness(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model_core.diffusion_classifier.schedule import parse_schedule
    from model_core.errors import SettingError
    from model_core.presets import get_preset
    from model_core.robustness.report import ReportConfig, run_report, to_markdown, write_report
    from model_core.robustness.threats import parse_attacks

    if args.on_workers or args.follow:
        from rguide.remote_robustness import run_on_workers

        return run_on_workers(args)
    _threads(args)
    try:
        preset = get_preset(args.preset)
        attacks = tuple(a.name for a in parse_attacks(args.attacks))
        if args.schedule:
            parse_schedule(args.schedule, preset.num_classes)
        sanity_eps = tuple(float(v) for v in args.sanity_eps.split(",") if v.strip())
        sanity_eps_l2 = tuple(float(v) for v in args.sanity_eps_l2.split(",") if v.strip())
    except SettingError as exc:
        raise CLIError(message(exc, FLAGS)) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.n < 1:
        raise CLIError("--n must be >= 1")
    if args.eot < 0:
        raise CLIError("--eot must be >= 0")
    gradients = None
    if args.diffusion_gradients is not None:
        gradients = _names(args.diffusion_gradients, GRADIENTS, "--diffusion-gradients")
        if "eot" in gradients and args.eot < 1:
            raise CLIError("--diffusion-gradients eot needs --eot K (K >= 1 draws per gradient)")
    cfg = ReportConfig(preset=preset.name, attacks=attacks, settings=_names(args.settings, SETTINGS, "--settings"),
                       defences=_names(args.defences, DEFENCES, "--defences"), n=args.n, seed=args.seed,
                       schedule=args.schedule, attack_timesteps=args.attack_timesteps, eot=args.eot > 0,
                       eot_samples=max(args.eot, 1), diffusion_gradients=gradients,
                       diffusion_whitebox_n=args.diffusion_whitebox_n,
                       diffusion_whitebox_steps=args.diffusion_whitebox_steps,
                       diffusion_whitebox_autoattack=args.diffusion_whitebox_autoattack,
                       sanity_n=args.sanity_n, sanity_eps=sanity_eps, sanity_eps_l2=sanity_eps_l2,
                       batch_size=args.batch_size,
                       device=args.device)
    bar = None

    def progress(phase: str, done: int, total: int) -> None:
        nonlocal bar
        if args.no_progress:
            return
        if bar is None or bar.desc != phase:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=phase, unit="img", dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        out = run_report(cfg, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    paths = write_report(out, args.out)
    print(to_markdown(out["report"]))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model_core.analysis.inputs import ImageRefused, decode_upload
    from model_core.diffusion_classifier.schedule import parse_schedule
    from model_core.errors import SettingError
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset
    from model_core.robustness.classify import classify_pixels

    _threads(args)
    try:
        preset = get_preset(args.preset)
        if args.schedule:
            parse_schedule(args.schedule, preset.num_classes)
    except SettingError as exc:
        raise CLIError(message(exc, FLAGS)) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    pixels = []
    for path in args.images:
        try:
            pixels.append(decode_upload(path.read_bytes(), image_size=preset.image_size, channels=preset.in_channels))
        except OSError as exc:
            raise CLIError(f"{path}: {exc.strerror or exc}") from None
        except ImageRefused as exc:
            raise CLIError(f"{path}: {exc}") from None
    pipe = get_pipeline(preset.name, args.device)
    bar = tqdm(total=1, desc=f"classify ({args.method})", unit="eval", disable=args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        results = classify_pixels(pipe, pixels, args.method, schedule=args.schedule, seed=args.seed,
                                  progress=progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps([{"image": str(p), **r} for p, r in zip(args.images, results)], indent=2))
        return 0
    names = preset.class_names
    print(f"method {args.method}; network evaluations per image: {results[0]['network_evaluations']}")
    print("| image | prediction | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for path, r in zip(args.images, results):
        print(f"| {path.name} | {r['class_name']} | " + " | ".join(f"{v:.3f}" for v in r["probabilities"]) + " |")
    return 0
