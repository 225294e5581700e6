"""``rguide replicate``: the paper's tables and figures, small, in one command and on one page."""
from __future__ import annotations

import argparse
from pathlib import Path

from rguide.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replicate", help="the paper replicated small: every table and figure on one HTML page",
                       description="Runs, in order: evaluate-classifier (the training attack and PGD-20), "
                                   "viz compare / gradients / maximize / trajectory (Figures 2-5), evaluate "
                                   "(Table 1) and the machine-rater pilot (Table 2), then writes OUT/index.html "
                                   "with each of our numbers beside the paper's and the command that made it. "
                                   "Resumable: a finished step is skipped when its command is unchanged.")
    p.add_argument("--preset", default=None, help="preset name (default: $RGUIDE_PRESET, else demo, else tiny)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/replicate/PRESET)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step")
    p.add_argument("--per-class", type=int, default=20, help="Table 1: generated images per class and row")
    p.add_argument("--pilot-per-class", type=int, default=5, help="Table 2: seed-matched pairs per class")
    p.add_argument("--heldout", type=int, default=200, help="Figures 3 and 4: held-out images the numbers use")
    p.add_argument("--classifier-n", type=int, default=500,
                   help="classifier robustness: held-out images per timestep bucket")
    p.add_argument("--steps", default=None, help="sampling steps of the sampling steps (default: the preset's)")
    p.add_argument("--only", default=None, help="comma-separated step keys to run (the page shows all finished)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_replicate)


def run_replicate(args: argparse.Namespace) -> int:
    from model_core.presets import get_preset
    from rguide import replicate as rp
    from rguide.cli import main as rguide_main

    try:
        preset = get_preset(args.preset)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    for flag in ("per_class", "pilot_per_class", "heldout", "classifier_n"):
        if getattr(args, flag) < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 1")
    missing = preset.missing_checkpoints()
    if missing:
        raise CLIError("; ".join(missing))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / "replicate" / preset.name
    sizes = rp.Sizes(per_class=args.per_class, pilot_per_class=args.pilot_per_class, heldout=args.heldout,
                     classifier_n=args.classifier_n, steps=args.steps, seed=args.seed)
    steps = rp.plan(preset, sizes, out)
    todo = steps
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in {s.key for s in steps}]
        if unknown:
            raise CLIError(f"--only: unknown step {', '.join(unknown)}; steps: {', '.join(s.key for s in steps)}")
        todo = [s for s in steps if s.key in keys]
    extra = ["--no-progress"] if args.no_progress else []

    def runner(argv: list[str]) -> int:
        return rguide_main(argv + extra)

    out.mkdir(parents=True, exist_ok=True)
    try:
        rp.run_plan(todo, out, runner, progress=not args.no_progress)
    except RuntimeError as exc:
        rp.build_page(steps, out, preset, sizes)
        raise CLIError(f"{exc}; the page shows the steps that finished: {out / 'index.html'}") from None
    page = rp.build_page(steps, out, preset, sizes)
    print(f"wrote {page}")
    return 0
