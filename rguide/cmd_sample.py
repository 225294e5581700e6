"""``rguide sample``: guided images to PNG files plus a JSON sidecar that reproduces them."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from model_core.files import atomic_write_text
from model_core.sampling import registry as samplers
from rguide.cli import CLIError

GUIDANCE_CHOICES = ("none", "vanilla", "robust", "pair")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample class-conditional images with robust, vanilla or no guidance",
                       description="Sample images; image i uses seed SEED+i (or the i-th of --seeds). "
                                   "Each PNG carries its settings; DIR/samples.json lists them all.")
    p.add_argument("--preset", default=None, help="preset name (default: $RGUIDE_PRESET, else demo, else tiny)")
    p.add_argument("--labels", required=True, help="comma-separated class indices or names, e.g. 3,7 or 'goldfish,tench'")
    p.add_argument("--guidance", default="pair", help="none | vanilla | robust | pair | another classifier of the preset")
    p.add_argument("--scale", default=None,
                   help="guidance scale: a number, or per method 'robust=1.0,vanilla=0.5' (default: the preset's)")
    p.add_argument("--steps", default=None, help="respacing: '250', 'ddim50', '10,15,20' (default: the preset's)")
    p.add_argument("--sampler", default=None, choices=samplers.names(), help="default: the preset's")
    p.add_argument("--seed", type=int, default=0, help="first seed; image i gets SEED+i")
    p.add_argument("--seeds", default=None, help="explicit comma-separated seeds, one per label")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def parse_scales(text: str | None, methods: list[str]) -> dict[str, float | None]:
    if text is None:
        return {m: None for m in methods}
    text = text.strip()
    out: dict[str, float | None] = {}
    if "=" not in text:
        value = _number(text, "--scale")
        return {m: value for m in methods}
    for part in text.split(","):
        if "=" not in part:
            raise CLIError(f"--scale {text!r}: write 'method=value' pairs, e.g. robust=1.0,vanilla=0.5")
        name, value = (s.strip() for s in part.split("=", 1))
        if name not in methods:
            raise CLIError(f"--scale names method {name!r}, which this run does not use ({', '.join(methods)})")
        out[name] = _number(value, f"--scale {name}")
    return {m: out.get(m) for m in methods}


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CLIError(f"{what}: {text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise CLIError(f"{what}: the scale must be a finite number >= 0, got {text}")
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "class"


def run(args: argparse.Namespace) -> int:
    from model_core.presets import get_preset
    from model_core.steps import parse_steps

    try:
        preset = get_preset(args.preset)
        labels = [preset.resolve_label(x.strip()) for x in args.labels.split(",") if x.strip()]
        if not labels:
            raise ValueError("--labels is empty")
        if args.guidance != "pair" and args.guidance not in preset.methods:
            raise ValueError(f"--guidance {args.guidance!r} is not one of {', '.join(preset.methods + ('pair',))}")
        steps = parse_steps(args.steps or preset.default_steps, args.sampler or
                            (None if args.steps else preset.default_sampler))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise CLIError(f"--seeds {args.seeds!r}: write comma-separated integers") from None
        if len(seeds) != len(labels):
            raise CLIError(f"--seeds gives {len(seeds)} seeds for {len(labels)} labels")
    else:
        seeds = [args.seed + i for i in range(len(labels))]
    if any(not 0 <= s < 2**63 for s in seeds):
        raise CLIError("seeds must be integers in [0, 2**63)")
    methods = ["robust", "vanilla"] if args.guidance == "pair" else [args.guidance]
    scale_args = parse_scales(args.scale, [m for m in methods if m != "none"])
    if any((v or 0) > preset.max_scale for v in scale_args.values()):
        raise CLIError(f"--scale: at most {preset.max_scale} for preset {preset.name!r}")
    missing = preset.missing_checkpoints(methods)
    if missing:
        raise CLIError("; ".join(missing))

    from tqdm import tqdm

    from model_core.images import save_png
    from model_core.pipeline import get_pipeline

    pipe = get_pipeline(preset.name, args.device)
    bar = tqdm(total=steps.num_steps, desc=f"sampling {len(labels)}x{'pair' if len(methods) > 1 else methods[0]}",
               unit="step", disable=args.no_progress)

    def progress(step, total, x_t, pred_x0):
        bar.total = total
        bar.update(1)

    if args.guidance == "pair":
        images = pipe.sample_pair(labels, seeds, {m: v for m, v in scale_args.items() if v is not None},
                                  steps.spec, steps.sampler, progress)
    else:
        images = {args.guidance: pipe.sample(labels, seeds, args.guidance, scale_args.get(args.guidance),
                                             steps.spec, steps.sampler, progress)}
    bar.close()

    args.out.mkdir(parents=True, exist_ok=True)
    provenance = pipe.provenance()
    records = []
    for i, (label, seed) in enumerate(zip(labels, seeds)):
        for method in methods:
            scale = preset.scale_for(method, scale_args.get(method))
            name = f"{i:03d}_{label}_{_slug(preset.class_names[label])}_{method}_seed{seed}.png"
            record = {"file": name, "index": i, "preset": preset.name, "label": label,
                      "class_name": preset.class_names[label], "seed": seed, "method": method, "scale": scale,
                      "steps": steps.spec, "sampler": steps.sampler, "pair": args.guidance == "pair"}
            save_png(images[method][i], args.out / name, {**record, "provenance": provenance})
            records.append(record)
    sidecar = {"command": "rguide sample", "provenance": provenance, "images": records,
               "reproduce": _reproduce_command(preset, labels, seeds, args.guidance, methods, scale_args, steps)}
    atomic_write_text(args.out / "samples.json", json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {len(records)} images and samples.json to {args.out}")
    return 0


def _reproduce_command(preset, labels, seeds, guidance, methods, scales, steps) -> str:
    parts = ["rguide sample", f"--preset {preset.name}", f"--labels {','.join(map(str, labels))}",
             f"--guidance {guidance}", f"--seeds {','.join(map(str, seeds))}",
             f"--steps {steps.spec}", f"--sampler {steps.sampler}", "--out OUT"]
    # Resolved scales, so the command still reproduces if the preset's defaults change.
    resolved = {m: preset.scale_for(m, scales.get(m)) for m in methods if m != "none"}
    if resolved:
        parts.insert(4, "--scale " + ",".join(f"{m}={v}" for m, v in resolved.items()))
    return " ".join(parts)
