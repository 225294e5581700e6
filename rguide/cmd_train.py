"""``rguide train-classifier``, ``rguide train-diffusion``, ``rguide train-feature-net``.

With ``--preset P`` the architecture, the diffusion process and the preset's
training recipe (``extra.training`` in its JSON: data and hyperparameters)
are the defaults, so ``rguide train-classifier --preset demo --robust --out
runs/robust`` reproduces the bundled demo classifier; every flag overrides.
Without a preset, give ``--data`` and ``--model-config`` (a JSON file of
ADM flags). A run directory resumes when the same command is run again.

Under ``torchrun --nproc-per-node N [--nnodes M] -m rguide train-...`` the
run is data-parallel (DDP; gloo on CPU, nccl with ``--device cuda``) with the
same global batch and schedule as one process; see
``model_core.training.distributed``.

The rule that turns a preset and overrides into a config lives in
``model_core.training.recipes``; this module only turns flags into overrides
(config field names) and spells the core's setting names as flags.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from model_core.errors import message
from rguide.cli import CLIError


def _common(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--preset", default=None, help="take the architecture, process and training recipe from a preset")
    p.add_argument("--data", default=None,
                   help="'mnist' (the bundled digits, fixed 4500/500 split), a .npz file (arrays 'images', "
                        "'labels') or a folder with one sub-folder per class")
    p.add_argument("--model-config", default=None, type=Path,
                   help=f"JSON file with the {what}'s ADM flags (overrides the preset's)")
    p.add_argument("--process-config", default=None, type=Path,
                   help="JSON file with the diffusion process (diffusion_steps, noise_schedule, learn_sigma)")
    p.add_argument("--out", required=True, type=Path, help="run directory (created; resumed if it holds a checkpoint)")
    p.add_argument("--steps", type=int, default=None, help="total training steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr-start", type=float, default=None, help="learning rate at step 0")
    p.add_argument("--lr-end", type=float, default=None, help="learning rate at the last step (linear in between)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    p.add_argument("--ema-decay", type=float, default=None, help="EMA decay (0: no EMA)")
    p.add_argument("--ema-warmup", action="store_true", default=None,
                   help="EMA decay min(decay, (1+n)/(10+n)) at step n, so the average forgets the initial weights")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--crop-pad", type=int, default=None, help="random translation by up to N pixels (0: off)")
    p.add_argument("--hflip", action="store_true", default=None, help="random horizontal flips (not for digits/text)")
    p.add_argument("--holdout", type=float, default=None,
                   help="hold out this fraction per class (seeded) and train on the rest; MNIST's split is fixed")
    p.add_argument("--value-range", default=None, choices=("auto", "0-255", "0-1", "-1-1"),
                   help="pixel range of .npz images (default: inferred)")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N steps")
    p.add_argument("--keep-every", type=int, default=None,
                   help="also keep the weights of every checkpoint at a multiple of N steps in OUT/snapshots/ "
                        "(to choose one on held-out data afterwards; 0: off)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly with a checkpoint after this long; run the same command to resume")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank its local GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-classifier", help="train a time-dependent classifier, vanilla or robust (PGD on x_t)",
                       description="Cross-entropy on noisy images x_t = q_sample(x_0, t), t uniform; with --robust "
                                   "on PGD-attacked x_t with per-sample early stopping (Kawar et al., Eq. 5). "
                                   "Defaults are the paper's: AdamW, lr 3e-4 -> 6e-5, wd 0.05, batch 128, "
                                   "L2 eps 0.5, step 0.083, 7 steps.")
    _common(p, "classifier")
    p.add_argument("--classifier", default=None,
                   help="which of the preset's classifier configs to train (default: robust with --robust, "
                        "else vanilla)")
    p.add_argument("--robust", action="store_true", help="adversarial training on PGD-attacked x_t")
    p.add_argument("--attack", choices=("l2", "linf"), default=None, help="threat model (paper: l2)")
    p.add_argument("--eps", type=float, default=None, help="attack radius (paper: 0.5)")
    p.add_argument("--step-size", type=float, default=None, help="attack step (paper: 0.083)")
    p.add_argument("--attack-steps", type=int, default=None, help="attack steps (paper: 7)")
    p.add_argument("--t-power", type=float, default=None,
                   help="draw t = floor(T * u**P), u uniform: 1 is the paper's uniform t; 2 puts half of each "
                        "batch at t < T/4")
    p.set_defaults(func=run_classifier)

    p = sub.add_parser("train-diffusion", help="train a class-conditional diffusion model (eps prediction, EMA)",
                       description="Epsilon prediction with optional learned sigma (hybrid loss); EMA weights "
                                   "exported as ema.pt.")
    _common(p, "UNet")
    p.set_defaults(func=run_diffusion)

    p = sub.add_parser("train-feature-net", help="train the small CNN whose features serve FID/precision/recall",
                       description="A CNN classifier of clean images; its penultimate layer is the feature for "
                                   "`rguide evaluate` on presets without Inception weights (the demo digits).")
    p.add_argument("--data", default="mnist")
    p.add_argument("--out", required=True, type=Path, help="weights file to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                   help="storage precision of the weights (float16 halves the file)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_feature_net)

    p = sub.add_parser("export-weights", help="copy a training run's weights into a file a preset loads",
                       description="Writes a plain state dict (EMA weights when the run kept them), by default in "
                                   "half precision, and FILE.json with the run's config, data fingerprint, seed, "
                                   "versions and hashes.")
    p.add_argument("--run", required=True, type=Path, help="run directory of train-classifier/train-diffusion")
    p.add_argument("--out", required=True, type=Path, help="weights file to write")
    p.add_argument("--which", default="auto", choices=("auto", "ema", "model"))
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.set_defaults(func=run_export)


def _read_json(path: Path | None, flag: str) -> dict | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CLIError(f"{flag} {path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CLIError(f"{flag} {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CLIError(f"{flag} {path}: expected a JSON object of settings")
    return data


def _preset(args):
    if args.preset is None:
        return None
    from model_core.presets import get_preset

    try:
        return get_preset(args.preset)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


# flag dest -> config field; CLASSIFIER_FLAGS only for train-classifier.
FLAG_TO_FIELD = {"steps": "total_steps", "batch_size": "batch_size", "lr_start": "lr_start", "lr_end": "lr_end",
                 "weight_decay": "weight_decay", "ema_decay": "ema_decay", "seed": "seed", "crop_pad": "crop_pad",
                 "hflip": "hflip", "holdout": "holdout", "value_range": "value_range", "ckpt_every": "ckpt_every",
                 "ema_warmup": "ema_warmup", "keep_every": "keep_every",
                 "data": "data"}
CLASSIFIER_FLAGS = {"attack": "attack", "eps": "eps", "step_size": "step_size", "attack_steps": "attack_steps",
                "t_power": "t_power"}
# How the core's setting names are spelled on this command line.
SETTING_FLAGS = {**{field: "--" + flag.replace("_", "-") for flag, field in {**FLAG_TO_FIELD, **CLASSIFIER_FLAGS}.items()},
                 "model": "--model-config", "process": "--process-config", "preset": "--preset",
                 "classifier": "--classifier", "out": "--out"}


def _overrides(args, flags: dict[str, str]) -> dict:
    """The flags the user gave, keyed by config field (None: not given)."""
    return {fld: getattr(args, flag, None) for flag, fld in flags.items()}


def _error(exc: Exception) -> CLIError:
    return CLIError(message(exc, SETTING_FLAGS))


def _threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _finish(result, out: Path, what: str) -> int:
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 speaks for the run
        return 0
    if result.finished:
        print(f"{what}: finished {result.total_steps} steps in {out} ({result.wall_seconds / 60:.1f} min in total); "
              f"weights: {out / 'model.pt'}" + (f", {out / 'ema.pt'}" if (out / "ema.pt").exists() else ""))
    else:
        print(f"{what}: stopped at step {result.step}/{result.total_steps}; run the same command to resume")
    return 0


def run_classifier(args: argparse.Namespace) -> int:
    from model_core.training.classifier import train_classifier
    from model_core.training.recipes import classifier_recipe

    preset = _preset(args)
    overrides = {"model": _read_json(args.model_config, "--model-config"),
                 "process": _read_json(args.process_config, "--process-config"),
                 **_overrides(args, {**FLAG_TO_FIELD, **CLASSIFIER_FLAGS})}
    try:
        cfg = classifier_recipe(preset, robust=bool(args.robust), classifier=args.classifier, overrides=overrides)
    except (TypeError, ValueError) as exc:
        raise _error(exc) from None
    _threads(args)
    result = _train(train_classifier, cfg, args)
    return _finish(result, args.out, "robust classifier" if cfg.robust else "vanilla classifier")


def run_diffusion(args: argparse.Namespace) -> int:
    from model_core.training.diffusion import train_diffusion
    from model_core.training.recipes import diffusion_recipe

    preset = _preset(args)
    overrides = {"model": _read_json(args.model_config, "--model-config"),
                 "process": _read_json(args.process_config, "--process-config"),
                 **_overrides(args, FLAG_TO_FIELD)}
    try:
        cfg = diffusion_recipe(preset, overrides)
    except (TypeError, ValueError) as exc:
        raise _error(exc) from None
    _threads(args)
    result = _train(train_diffusion, cfg, args)
    return _finish(result, args.out, "diffusion model")


def _train(fn, cfg, args):
    from model_core.data import DatasetError
    from model_core.errors import SettingError

    try:
        return fn(cfg, args.out, max_minutes=args.max_minutes, progress=not args.no_progress, device=args.device)
    except (DatasetError, SettingError) as exc:  # SettingError: a RunConfigMismatch, data that do not fit the model
        raise _error(exc) from None


def run_feature_net(args: argparse.Namespace) -> int:
    from model_core.data import DatasetError, has_heldout_split, load_dataset
    from model_core.models.feature_net import save_feature_net
    from model_core.training.feature_net import train_feature_net
    from model_core.provenance import environment

    _threads(args)
    try:
        train = load_dataset(args.data, split="train")
        test = load_dataset(args.data, split="test") if has_heldout_split(args.data) else None
    except DatasetError as exc:
        raise _error(exc) from None
    if test is None:
        raise CLIError("the feature network is evaluated on a held-out split; only --data mnist has one built in")
    import torch

    from model_core.models.feature_net import as_stored, classify_accuracy

    started = time.monotonic()
    net, info = train_feature_net(train, test, steps=args.steps, seed=args.seed, progress=not args.no_progress)
    info["wall_seconds"] = round(time.monotonic() - started, 1)
    info.update({"data": train.describe(), "test_data": test.describe(), "dtype": args.dtype, **environment()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    if dtype != torch.float32:
        # Record the accuracy of the weights as stored, not as trained.
        info["test_accuracy_fp32"] = info["test_accuracy"]
        info["test_accuracy"] = classify_accuracy(as_stored(net, dtype), test.images, test.labels)
    save_feature_net(net, args.out, info, dtype)
    print(f"feature net: held-out accuracy {info['test_accuracy']:.4f} on {len(test)} images; wrote {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from model_core.training.loop import export_run_weights

    try:
        meta = export_run_weights(args.run, args.out, args.which, args.dtype)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {args.out} ({meta['weights']} weights of {args.run} at step {meta['run'].get('step')}, "
          f"{meta['dtype']}, sha256 {meta['sha256'][:16]}...)")
    return 0
