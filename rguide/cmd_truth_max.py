"""``rguide truth-max``: Truth Maximization fine-tuning of a preset's diffusion model, then checkpoint selection."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_core.errors import message
from rguide.cli import CLIError

# How TruthMaxConfig's field names are spelled on this command line.
FLAGS = {"batch_size": "--batch-size", "total_steps": "--steps", "lr": "--lr", "warmup_steps": "--warmup",
         "weight_decay": "--weight-decay", "attack": "--attack", "attack_steps": "--attack-steps",
         "surrogate": "--surrogate", "ckpt_every": "--ckpt-every", "select_n": "--select-n", "data": "--data",
         "preset": "--preset", "out": "--out", "select_schedule": "--select-schedule",
         "eval_seed": "--eval-seed", "seed": "--seed",
         "select_attack": "--select-attack"}


def register(sub: argparse._SubParsersAction) -> None:
    from model_core.diffusion_classifier.truth_max import TruthMaxConfig

    d = TruthMaxConfig()
    p = sub.add_parser(
        "truth-max", help="Truth Maximization: fine-tune the diffusion model on adversarial images with true labels",
        description="Fine-tunes the preset's class-conditional diffusion model on training images perturbed by an "
                    "attack on the surrogate classifier (default: PGD Linf eps 0.05 in [0, 1] units on the vanilla "
                    "classifier at t = 0), minimising the denoising loss with the true labels (AdamW, constant "
                    "learning rate after warm-up). Resumable; writes OUT/ckpt_<step>.pt every --ckpt-every steps, "
                    "then scores every checkpoint (and the starting weights) by the diffusion classifier's robust "
                    "accuracy on held-out digits disjoint from the robustness report's, writes "
                    "OUT/selection.json and copies the best to OUT/best.pt.")
    p.add_argument("--preset", default=None)
    p.add_argument("--data", default=None, help="training data (default: the preset's)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--steps", type=int, default=d.total_steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="after warm-up (the paper: 1e-6 for Stable Diffusion)")
    p.add_argument("--warmup", type=int, default=d.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--attack", default=d.attack,
                   help="fgsm, pgd, fgm-l2 or pgd-l2 (rguide robustness --help), or none: fine-tune on the clean "
                        "digits, the control that separates Truth Maximization from more training")
    p.add_argument("--attack-steps", type=int, default=d.attack_steps)
    p.add_argument("--surrogate", default=d.surrogate)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--select-n", type=int, default=d.select_n, help="held-out digits for checkpoint selection")
    p.add_argument("--select-attack", default=d.select_attack,
                   help="the transfer attack checkpoints are selected under (made on --surrogate)")
    p.add_argument("--select-schedule", default=None, help="diffusion classifier schedule for selection (5:3,15)")
    p.add_argument("--no-select", action="store_true", help="train only")
    p.add_argument("--seed", type=int, default=d.seed, help="training: batches, attack starts, timesteps, noise")
    p.add_argument("--eval-seed", type=int, default=d.eval_seed,
                   help="the robustness report's --seed: selection uses the last --select-n digits of its "
                        "permutation, its attack seed and its diffusion-classifier draws")
    p.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_truth_max)


def run_truth_max(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model_core.diffusion_classifier.truth_max import TruthMaxConfig, select_checkpoint, train_truth_max
    from model_core.errors import InputError
    from model_core.presets import get_preset

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        preset = get_preset(args.preset)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    cfg = TruthMaxConfig(preset=preset.name, data=args.data, batch_size=args.batch_size, total_steps=args.steps,
                         lr=args.lr, warmup_steps=args.warmup, weight_decay=args.weight_decay, attack=args.attack,
                         attack_steps=args.attack_steps, surrogate=args.surrogate, seed=args.seed,
                         ckpt_every=args.ckpt_every, select_n=args.select_n, select_schedule=args.select_schedule,
                         eval_seed=args.eval_seed, select_attack=args.select_attack)
    try:
        res = train_truth_max(cfg, args.out, device=args.device, max_minutes=args.max_minutes,
                              progress=not args.no_progress)
        if not res.finished:
            print(f"stopped at step {res.step}/{res.total_steps}; run the same command to resume")
            return 0
        if args.no_select:
            return 0
        bar = tqdm(total=1, desc="selecting checkpoints", disable=args.no_progress)

        def progress(phase, done, total):
            bar.total, bar.n = total, done
            bar.refresh()

        sel = select_checkpoint(cfg, args.out, device=args.device, progress=progress)
        bar.close()
    except InputError as exc:
        raise CLIError(message(exc, FLAGS)) from None
    print(f"Checkpoint selection on {sel['n']} held-out digits, transfer attack {sel['attack']} from the "
          f"{sel['surrogate']}, diffusion classifier schedule {sel['schedule']}:")
    print("| step | clean | robust |\n|---:|---:|---:|")
    for r in sel["checkpoints"]:
        print(f"| {r['step']} | {r['clean_accuracy']:.3f} | {r['robust_accuracy']:.3f} |")
    print(f"best: step {sel['best']['step']} ({'the starting weights' if sel['best']['step'] == 0 else args.out / 'best.pt'})")
    print(json.dumps({"selection": str(Path(args.out) / 'selection.json')}))
    return 0
