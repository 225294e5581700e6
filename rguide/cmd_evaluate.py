"""``rguide evaluate`` (FID / precision / recall per guidance method and scale) and
``rguide evaluate-classifier`` (clean and PGD accuracy on noisy held-out images)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_core.errors import message
from model_core.sampling import registry as samplers
from rguide.cli import CLIError

# How the core's setting names are spelled on these command lines.
EVALUATE_FLAGS = {"methods": "--guidance", "scales": "--scales", "per_class": "--per-class", "steps": "--steps",
                  "sampler": "--sampler", "samplers": "--samplers", "seed": "--seed", "features": "--features",
                  "feature_weights": "--feature-weights", "real_data": "--real", "k": "--k", "preset": "--preset",
                  "feature_batch": "--feature-batch", "shard_size": "--shard-size"}
CLASSIFIER_FLAGS = {"data": "--data", "attack": "--attack", "eps": "--eps", "step_size": "--step-size",
                    "attack_steps": "--attack-steps", "buckets": "--buckets", "seed": "--seed",
                    "preset": "--preset"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="FID, precision and recall per guidance method and scale (paper Tables 1, 5, 6)",
                       description="Samples PER_CLASS images of every class for each method and scale with the "
                                   "same seeds (image i gets SEED+i in every row) and compares them with real "
                                   "held-out images. Writes OUT/results.json, OUT/results.md, one grid PNG per "
                                   "row, and caches samples so a re-run continues. With --samplers the table "
                                   "repeats for each sampler and step count, with network evaluations and "
                                   "seconds per image, and OUT/quality_vs_evaluations.png plots FID against them.")
    p.add_argument("--preset", default=None, help="preset name (default: $RGUIDE_PRESET, else demo, else tiny)")
    p.add_argument("--guidance", default="none,vanilla,robust", help="comma-separated methods")
    p.add_argument("--scales", default="0.25,0.5,1,2",
                   help="comma-separated guidance scales; 'preset': each method's default scale and twice it; "
                        "'default': each method's default scale only")
    p.add_argument("--per-class", type=int, default=50, help="generated images per class and row")
    p.add_argument("--steps", default=None, help="respacing, e.g. 100, ddim50 or logsnr20 (default: the preset's)")
    p.add_argument("--sampler", default=None, choices=samplers.names(), help="default: the preset's")
    p.add_argument("--samplers", default=None, metavar="SAMPLER:STEPS,...",
                   help="compare samplers and step counts as row sets on the same seeds, e.g. "
                        "ddpm:250,ddpm:100,ddim:ddim10,dpmpp_2m:20,dpmpp_2m_sde:logsnr15 (replaces --steps/--sampler; "
                        f"samplers: {', '.join(samplers.names())}); the first is the reference")
    p.add_argument("--seed-noise", action="store_true",
                   help="sample the reference rows again on a disjoint seed set (SEED+N+i) and report how far "
                        "each metric moves between seed sets")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--features", default=None, choices=("digits", "inception"),
                   help="feature network (default: the preset's)")
    p.add_argument("--feature-weights", "--inception-weights", dest="feature_weights", default=None,
                   help="weights file of the feature network (Inception-V3: never downloaded)")
    p.add_argument("--real", default=None, help="real images to compare with (.npz or class folder; default: "
                                                "the preset's held-out set)")
    p.add_argument("--k", type=int, default=3, help="k of the k-NN precision/recall (Kynkaanniemi et al.: 3)")
    p.add_argument("--feature-batch", type=int, default=256,
                   help="images per feature-network batch, in fixed blocks of each row (give a service "
                        "evaluation's value to reproduce its numbers exactly)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-progress", action="store_true")
    w = p.add_argument_group("on the service's workers", "submit to POST /v1/evaluations and follow it; the "
                             "feature network and real images are the preset's on the server")
    w.add_argument("--on-workers", metavar="URL", default=None,
                   help="the service's base URL, e.g. http://gpu-host:8000: the evaluation runs in shards on "
                        "every free worker")
    w.add_argument("--api-key", default=None, help="a researcher key (default: $RGUIDE_API_KEY)")
    w.add_argument("--shard-size", type=int, default=256,
                   help="images per shard (a multiple of --feature-batch)")
    w.add_argument("--resume", metavar="ID", default=None,
                   help="follow evaluation ID again, re-running its failed or canceled shards (finished "
                        "shards are kept)")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("evaluate-classifier",
                       help="clean and PGD accuracy of a preset's classifiers on noisy held-out images",
                       description="Each held-out image is noised once per timestep bucket (t uniform in the "
                                   "bucket; the same t and noise for every classifier) and attacked with "
                                   "untargeted PGD with early stopping.")
    p.add_argument("--preset", default=None)
    p.add_argument("--classifiers", default=None, help="comma-separated (default: all of the preset's)")
    p.add_argument("--data", default=None, help="held-out data (default: the preset's training data, test split)")
    p.add_argument("--attack", default=None, choices=("l2", "linf"),
                   help="threat model (default: the preset's robust training recipe, else the paper's l2)")
    p.add_argument("--eps", type=float, default=None,
                   help="attack radius (default: the preset's robust training radius, else the paper's 0.5)")
    p.add_argument("--step-size", type=float, default=None, help="attack step (default: the recipe's, or eps/6 as in the paper when --eps is given)")
    p.add_argument("--attack-steps", type=int, default=None, help="attack steps (default: the recipe's, else the paper's 7)")
    p.add_argument("--buckets", type=int, default=4)
    p.add_argument("--n", type=int, default=None, help="the first N held-out images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_evaluate_classifier)


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"{flag} {text!r}: write comma-separated numbers") from None
    if not vals or any(not (v > 0 and v != float("inf")) for v in vals):
        raise CLIError(f"{flag} {text!r}: give one or more positive finite numbers")
    return vals


def run_evaluate(args: argparse.Namespace) -> int:
    from model_core.evaluation.quality import EvalSettings, run_evaluation
    from model_core.presets import get_preset

    if args.on_workers or args.resume:
        from rguide.remote_evaluate import run_on_workers

        return run_on_workers(args)

    try:
        preset = get_preset(args.preset)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    methods = [m.strip() for m in args.guidance.split(",") if m.strip()]
    unknown = [m for m in methods if m not in preset.methods]
    if not methods or unknown:
        why = f" ({unknown[0]!r} is {preset.not_offered(unknown[0])})" if unknown else ""
        raise CLIError(f"--guidance {args.guidance!r}: choose from {', '.join(preset.methods)}{why}")
    if args.per_class < 1:
        raise CLIError("--per-class must be >= 1")
    if args.k < 1:
        raise CLIError("--k must be >= 1")
    missing = preset.missing_checkpoints(methods)
    if missing:
        raise CLIError("; ".join(missing))
    if args.samplers is not None and (args.steps is not None or args.sampler is not None):
        raise CLIError("--samplers names the steps of every row set: leave out --steps and --sampler")
    word = args.scales.strip().lower()
    if word in ("preset", "default"):
        base = {m: preset.scale_for(m, None) for m in methods if m != "none"}
        scales, method_scales = [1.0], {m: [s, 2 * s] if word == "preset" else [s] for m, s in base.items()}
    else:
        scales, method_scales = _floats(args.scales, "--scales"), None
    settings = EvalSettings(preset=preset.name, methods=methods, scales=scales, method_scales=method_scales,
                            per_class=args.per_class, steps=args.steps, sampler=args.sampler, seed=args.seed,
                            features=args.features, feature_weights=args.feature_weights, real_data=args.real,
                            k=args.k, seed_noise=args.seed_noise, feature_batch=args.feature_batch,
                            samplers=[x for x in args.samplers.split(",") if x.strip()] if args.samplers else None)
    try:
        report = run_evaluation(settings, args.out, device=args.device, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(message(exc, EVALUATE_FLAGS)) from None
    print((args.out / "results.md").read_text())
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and {len(report['rows'])} grids")
    if "plot" in report:
        print(f"wrote {report['plot']}")
    return 0


def run_evaluate_classifier(args: argparse.Namespace) -> int:
    from model_core.data import DatasetError, heldout_data, load_dataset
    from model_core.pipeline import get_pipeline
    from model_core.presets import get_preset
    from model_core.robustness.evaluate import evaluate_classifier
    from model_core.training.recipes import classifier_process

    try:
        preset = get_preset(args.preset)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    # The classifier networks: a method that guides with the diffusion model has none to attack here.
    names = [c.strip() for c in args.classifiers.split(",")] if args.classifiers else list(preset.networks)
    unknown = [c for c in names if c not in preset.networks]
    if unknown:
        raise CLIError(f"--classifiers: {', '.join(unknown)} not in preset {preset.name!r} "
                       f"({', '.join(preset.networks)})")
    try:
        data, split = heldout_data(preset, args.data)
        ds = load_dataset(data, split=split, image_size=preset.image_size, channels=preset.in_channels)
    except DatasetError as exc:
        raise CLIError(message(exc, CLASSIFIER_FLAGS)) from None
    if args.n is not None:
        if args.n < 1:
            raise CLIError("--n must be >= 1")
        ds = ds.subset(range(min(args.n, len(ds))))
    missing = preset.missing_checkpoints(names)
    if missing:
        raise CLIError("; ".join(missing))
    attack = attack_settings(preset, args)
    pipe = get_pipeline(preset.name, "cpu")
    process = classifier_process(preset)
    results = {}
    for name in names:
        res = evaluate_classifier(pipe.classifiers[name], ds, process, **attack, buckets=args.buckets,
                                  seed=args.seed, progress=not args.no_progress)
        results[name] = res
    print(classifier_table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"preset": preset.name, "weights": pipe.sources, "results": results},
                                       indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def attack_settings(preset, args: argparse.Namespace) -> dict:
    """The attack flags over ``model_core.robustness.defaults.attack_settings``: the preset's training attack,
    else the paper's; ``--eps`` alone takes the paper's eps/6 step."""
    from model_core.robustness.defaults import ATTACK_FIELDS
    from model_core.robustness.defaults import attack_settings as defaults

    return defaults(preset, {k: getattr(args, k) for k in ATTACK_FIELDS}).to_dict()


def classifier_table(results: dict) -> str:
    first = next(iter(results.values()))
    buckets = list(first["buckets"])
    a = first["attack"]
    head = (f"Accuracy on {first['data']['num_images']} noisy held-out images per bucket; PGD {a['norm'].upper()} "
            f"eps {a['eps']}, step {a['step_size']}, {a['steps']} steps, early stopping; seed {first['seed']}")
    lines = [head, "", "| Classifier | Accuracy | " + " | ".join(f"t {b}" for b in buckets) + " | all |",
             "|---|---|" + "---:|" * (len(buckets) + 1)]
    for name, res in results.items():
        for key, label in (("clean_acc", "clean"), ("adv_acc", "under PGD")):
            cells = [f"{res['buckets'][b][key]:.3f}" for b in buckets]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {res[key]:.3f} |")
    return "\n".join(lines)
