"""``rguide sample``: guided images to PNG files plus a JSON sidecar that reproduces them."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from model_core.files import atomic_write_text
from model_core.sampling import registry as samplers
from rguide.cli import CLIError

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample class-conditional images with robust, vanilla or no guidance",
                       description="Sample images; image i uses seed SEED+i (or the i-th of --seeds). "
                                   "Each PNG carries its settings; DIR/samples.json lists them all.")
    p.add_argument("--preset", default=None, help="preset name (default: $RGUIDE_PRESET, else demo, else tiny)")
    p.add_argument("--labels", required=True, help="comma-separated class indices or names, e.g. 3,7 or 'goldfish,tench'")
    p.add_argument("--guidance", default="pair",
                   help="none | vanilla | robust | pair | diffusion (the diffusion model as its own classifier; "
                        "class-conditional presets only) | another method the preset lists")
    p.add_argument("--scale", default=None,
                   help="guidance scale: a number, or per method 'robust=1.0,vanilla=0.5' (default: the preset's)")
    p.add_argument("--steps", default=None,
                   help="respacing: '250', 'ddim50', 'logsnr20' (uniform in log-SNR), '10,15,20' (default: the preset's)")
    p.add_argument("--sampler", default=None, choices=samplers.names(), help="default: the preset's")
    p.add_argument("--seed", type=int, default=0, help="first seed; image i gets SEED+i")
    p.add_argument("--seeds", default=None, help="explicit comma-separated seeds, one per label")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


FLAGS = {"preset": "--preset", "class_labels": "--labels", "guidance": "--guidance", "scale": "--scale",
         "steps": "--steps", "sampler": "--sampler", "seed": "--seed", "seeds": "--seeds"}


def parse_scales(text: str | None) -> float | dict[str, float] | None:
    """``1.5`` -> 1.5; ``robust=1.0,vanilla=0.5`` -> per method. Ranges are the resolver's to check."""
    if text is None:
        return None
    text = text.strip()
    if "=" not in text:
        return _number(text, "--scale")
    out: dict[str, float] = {}
    for part in text.split(","):
        if "=" not in part:
            raise CLIError(f"--scale {text!r}: write 'method=value' pairs, e.g. robust=1.0,vanilla=0.5")
        name, value = (s.strip() for s in part.split("=", 1))
        out[name] = _number(value, f"--scale {name}")
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CLIError(f"{what}: {text!r} is not a number") from None


def _flag_message(error) -> str:
    """A resolver problem, named by the flag that set its field.

    The core names the setting ("scale must be positive"); the CLI says the
    flag ("--scale must be positive"), or puts it in front when the message
    starts otherwise ("--labels: class label 4 is out of range ...").
    """
    head = str(error.field[0])
    flag = FLAGS.get(head, head)
    words = head.replace("_", " ")
    if error.message.startswith(words + " "):
        return flag + error.message[len(words):]
    return f"{flag}: {error.message}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "class"


def run(args: argparse.Namespace) -> int:
    from model_core.generation_request import RequestInvalid, resolve_generation
    from model_core.presets import PAIR, get_preset

    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise CLIError(f"--seeds {args.seeds!r}: write comma-separated integers") from None
    else:
        seeds = None
    try:
        request = resolve_generation(preset=args.preset, class_labels=[x.strip() for x in args.labels.split(",")
                                                                      if x.strip()],
                                     guidance=args.guidance, scale=parse_scales(args.scale), steps=args.steps,
                                     sampler=args.sampler, seed=None if seeds else args.seed, seeds=seeds)
    except RequestInvalid as exc:
        raise CLIError("; ".join(_flag_message(e) for e in exc.errors)) from None
    preset = get_preset(request.preset)
    labels, seeds, methods = list(request.labels), list(request.seeds), list(request.methods)

    from tqdm import tqdm

    from model_core.images import save_png
    from model_core.pipeline import get_pipeline

    pipe = get_pipeline(preset.name, args.device)
    bar = tqdm(total=request.num_steps, desc=f"sampling {len(labels)}x{'pair' if len(methods) > 1 else methods[0]}",
               unit="step", disable=args.no_progress)

    def progress(step, total, x_t, pred_x0):
        bar.total = total
        bar.update(1)

    if request.guidance == PAIR:
        images = pipe.sample_pair(labels, seeds, request.scales, request.steps, request.sampler, progress)
    else:
        images = {request.guidance: pipe.sample(labels, seeds, request.guidance,
                                                request.scales.get(request.guidance), request.steps, request.sampler,
                                                progress)}
    bar.close()

    args.out.mkdir(parents=True, exist_ok=True)
    provenance = pipe.provenance()
    records = []
    for i, (label, seed) in enumerate(zip(labels, seeds)):
        for method in methods:
            scale = preset.scale_for(method, request.scales.get(method))
            name = f"{i:03d}_{label}_{_slug(preset.class_names[label])}_{method}_seed{seed}.png"
            cost = preset.guidance_cost(method)
            record = {"file": name, "index": i, "preset": preset.name, "label": label,
                      "class_name": preset.class_names[label], "seed": seed, "method": method, "scale": scale,
                      "steps": request.steps, "sampler": request.sampler, "pair": request.guidance == PAIR,
                      # What the image cost, as evaluation rows count it (guidance by the diffusion model
                      # itself adds classes x (draws + 1) UNet forwards a step).
                      "unet_evals": request.num_steps * (1 + cost.unet),
                      "classifier_evals": request.num_steps * cost.classifier}
            save_png(images[method][i], args.out / name, {**record, "provenance": provenance})
            records.append(record)
    sidecar = {"command": "rguide sample", "provenance": provenance, "images": records,
               "reproduce": _reproduce_command(request)}
    atomic_write_text(args.out / "samples.json", json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {len(records)} images and samples.json to {args.out}")
    return 0


def _reproduce_command(request) -> str:
    parts = ["rguide sample", f"--preset {request.preset}", f"--labels {','.join(map(str, request.labels))}",
             f"--guidance {request.guidance}", f"--seeds {','.join(map(str, request.seeds))}",
             f"--steps {request.steps}", f"--sampler {request.sampler}", "--out OUT"]
    # Resolved scales, so the command still reproduces if the preset's defaults change.
    if request.scales:
        parts.insert(4, "--scale " + ",".join(f"{m}={v}" for m, v in request.scales.items()))
    return " ".join(parts)
