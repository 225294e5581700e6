"""Truth Maximization (the TMDC paper, Sec. 3.3 and Algorithm 1): fine-tune the class-conditional
diffusion model on adversarially perturbed training images, conditioned on their *true* labels.

Each step: a batch of training digits, perturbed by an attack on a surrogate
classifier (the paper perturbs CIFAR-10 with PGD / AutoAttack made on a
ResNet-50; here the preset's vanilla classifier at t = 0, PGD Linf eps 0.05
in [0, 1] units, 10 steps), then one AdamW step on the epsilon-prediction
MSE at uniform timesteps with the true labels. It runs on the project's
training loop (``model_core.training.loop.run_loop``: resumable, seeded per
step, checkpoints), which also writes each checkpoint's weights as
``ckpt_<step>.pt`` so that :func:`select_checkpoint` can pick the one with the
best robust accuracy on held-out digits: the paper found an early checkpoint
(200 of 3,000 steps) best and later ones overfitting.

Optimiser defaults follow the paper (AdamW, betas (0.9, 0.999), weight decay
1e-2, eps 1e-8, constant learning rate after 100 warm-up steps, checkpoints
every 100 steps) with the learning rate scaled to this model: the paper's
1e-6 fine-tunes Stable Diffusion 2.0 at batch 4; the demo UNet was trained at
3e-4 -> 1e-4 with batch 64, so the default is 1e-5 at batch 32.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from model_core.errors import SettingError

# The training "attack" that leaves the digits clean: the same fine-tuning without perturbations, the control
# that tells Truth Maximization's effect apart from that of more training steps alone.
CLEAN = "none"


@dataclass
class TruthMaxConfig:
    preset: str = "demo"
    data: str | None = None             # default: the preset's training data (train split)
    batch_size: int = 32
    total_steps: int = 600
    lr: float = 1e-5
    warmup_steps: int = 100
    weight_decay: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    attack: str = "pgd"                 # a name of threats.ATTACKS (fgsm or pgd kinds), made on the surrogate
    attack_steps: int = 10
    surrogate: str = "vanilla"
    seed: int = 0
    ckpt_every: int = 100
    # The robustness report's --seed: selection scores every checkpoint on the last select_n images of that
    # report's permutation, with its attack seed and diffusion-classifier draws, so runs that differ only in
    # their training seed are selected on the same digits, apart from the report's.
    eval_seed: int = 0
    # checkpoint selection: robust accuracy (transfer attack from the surrogate) of the diffusion classifier
    select_n: int = 64
    select_schedule: str | None = None
    select_attack: str = "pgd"          # made on the surrogate with attack_steps, whatever the training attack

    def validate(self) -> None:
        from model_core.robustness.threats import ATTACKS

        for name in ("batch_size", "total_steps", "ckpt_every", "select_n"):
            if int(getattr(self, name)) < 1:
                raise SettingError(name, f"{{{name}}} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise SettingError("warmup_steps", "{warmup_steps} must be >= 0")
        if not self.lr > 0 or self.weight_decay < 0:
            raise SettingError("lr", "{lr} must be > 0 and {weight_decay} >= 0", also=("weight_decay",))
        usable = [k for k, a in ATTACKS.items() if a.kind != "autoattack"]
        if self.attack not in usable + [CLEAN]:
            raise SettingError("attack", f"{{attack}} {self.attack!r}: choose fgsm or a pgd attack "
                                         f"({', '.join(usable)}), or {CLEAN!r} for the clean-data control")
        if self.select_attack not in usable:
            raise SettingError("select_attack", f"{{select_attack}} {self.select_attack!r}: choose "
                                                f"{', '.join(usable)}")

    def to_dict(self) -> dict:
        return asdict(self)


def constant_with_warmup(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


def perturb(surrogate: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, steps: int,
            seed: int) -> torch.Tensor:
    from model_core.robustness.image_attacks import fgsm, pgd
    from model_core.robustness.threats import ATTACKS, model_eps

    if attack == CLEAN:
        return x
    spec = ATTACKS[attack]
    if spec.kind == "fgsm":
        return fgsm(surrogate, x, y, eps=model_eps(spec.eps), norm=spec.norm)
    return pgd(surrogate, x, y, norm=spec.norm, eps=model_eps(spec.eps), steps=steps, seed=seed)


def denoising_loss(model, diffusion, x0, y, t, noise) -> torch.Tensor:
    """Mean epsilon-prediction MSE with the true labels (the quantity the diffusion classifier ranks by)."""
    return diffusion.training_losses(model, x0, t, model_kwargs={"y": y}, noise=noise)["mse"].mean()


def truth_max_step(model, optimizer, diffusion, x_adv, y, t, noise) -> float:
    """One Truth Maximization update on a perturbed batch; returns the loss before the update."""
    loss = denoising_loss(model, diffusion, x_adv, y, t, noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_truth_max(cfg: TruthMaxConfig, out: str | Path, *, pipeline=None, dataset=None, device: str = "cpu",
                    max_minutes: float | None = None, progress: bool = True, stop_at: int | None = None):
    """Fine-tune (or resume) in run directory ``out``; writes ``ckpt_<step>.pt`` at every checkpoint."""
    from model_core.checkpoints import save_weights
    from model_core.data import batch_indices, load_dataset, preset_training_data
    from model_core.diffusion import create_diffusion
    from model_core.pipeline import get_pipeline
    from model_core.robustness.defences import AtTimestep
    from model_core.training.loop import RunDir, count_parameters, mean_of, run_info, run_loop, seed_everything, \
        step_generator

    cfg.validate()
    pipe = pipeline or get_pipeline(cfg.preset, device)
    preset = pipe.preset
    if not pipe.class_cond:
        raise SettingError("preset", f"preset {preset.name!r} has an unconditional diffusion model")
    if cfg.surrogate not in pipe.classifiers:
        raise SettingError("surrogate", f"{{surrogate}} {cfg.surrogate!r} is not a classifier of preset {preset.name!r}")
    if dataset is None:
        spec = cfg.data or preset_training_data(preset)
        if spec is None:
            raise SettingError("data", f"preset {preset.name!r} records no training data: give {{data}}")
        dataset = load_dataset(spec, split="train", image_size=preset.image_size, channels=preset.in_channels)
    ds = dataset
    diffusion = create_diffusion(preset.diffusion["process"])
    seed_everything(cfg.seed)
    model = copy.deepcopy(pipe.unet).float().to(device)
    model.requires_grad_(True)
    surrogate = AtTimestep(pipe.classifiers[cfg.surrogate], 0).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    info = run_info("truth_max", cfg.to_dict(), ds.describe(), cfg.seed)
    info["parameters"] = count_parameters(model)
    info["start_weights"] = pipe.sources["diffusion"]
    done = {"step": 0}

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(len(ds), cfg.batch_size, cfg.seed, step))
        x0, y = ds.images[idx].to(device), ds.labels[idx].to(device)
        x_adv = perturb(surrogate, x0, y, cfg.attack, cfg.attack_steps, seed=cfg.seed * 1_000_003 + step)
        t = torch.randint(0, diffusion.num_timesteps, (len(idx),),
                          generator=step_generator(cfg.seed, step, "timesteps")).to(device)
        noise = torch.randn(x0.shape, generator=step_generator(cfg.seed, step, "noise")).to(device)
        loss = truth_max_step(model, optimizer, diffusion, x_adv, y, t, noise)
        done["step"] = step + 1
        return {"loss": loss, "perturbation_linf": float((x_adv - x0).abs().amax() / 2)}

    def export(path: Path) -> None:
        meta = {"kind": "truth_max", "preset": preset.name, "model": preset.diffusion["model"],
                "process": preset.diffusion["process"], "seed": cfg.seed, "step": done["step"],
                "start_weights": info["start_weights"], "code_version": info["code_version"]}
        save_weights(model, path / "model.pt", metadata=meta)
        save_weights(model, path / f"ckpt_{done['step']:06d}.pt", metadata=meta)

    def postfix(recent: list[dict]) -> dict:
        return {"loss": f"{mean_of(recent, 'loss'):.4f}"}

    return run_loop(run=RunDir(Path(out)), info=info, model=model, optimizer=optimizer, ema=None,
                    total_steps=cfg.total_steps, step_fn=step_fn,
                    lr_fn=lambda s: constant_with_warmup(s, cfg.lr, cfg.warmup_steps), export_fn=export,
                    ckpt_every=cfg.ckpt_every, max_minutes=max_minutes, progress=progress, desc="truth-max",
                    postfix_fn=postfix, stop_at=stop_at)


def checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    return sorted((int(p.stem.split("_")[1]), p) for p in Path(out).glob("ckpt_*.pt"))


def select_checkpoint(cfg: TruthMaxConfig, out: str | Path, *, pipeline=None, dataset=None, device: str = "cpu",
                      progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Robust accuracy of every checkpoint (and of the starting weights, step 0) on held-out digits.

    The images are the **last** ``select_n`` of the permutation whose first n
    the robustness report uses (seed ``cfg.eval_seed``, the report's ``--seed``), so selection and report
    are disjoint while n + select_n <= the held-out size. Robust accuracy here
    is the diffusion classifier's under ``select_attack`` (default PGD,
    the training attack's default) made on the surrogate (transfer), the
    setting Truth Maximization trains for; a clean-data control (``attack
    = "none"``) is selected under the same attack. Writes
    ``selection.json`` and copies the best checkpoint to ``best.pt``.
    """
    import shutil

    from model_core.checkpoints import load_weights
    from model_core.data import heldout_data, load_dataset
    from model_core.diffusion_classifier.classifier import from_pipeline
    from model_core.files import atomic_write_text
    from model_core.pipeline import get_pipeline
    from model_core.robustness.defences import AtTimestep

    pipe = pipeline or get_pipeline(cfg.preset, device)
    preset = pipe.preset
    if dataset is None:
        spec, split = heldout_data(preset, cfg.data)
        dataset = load_dataset(spec, split=split, image_size=preset.image_size, channels=preset.in_channels)
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.eval_seed))
    idx = perm[-min(cfg.select_n, len(dataset)):]
    x, y = dataset.images[idx].to(device), dataset.labels[idx].to(device)
    surrogate = AtTimestep(pipe.classifiers[cfg.surrogate], 0).eval()
    x_adv = perturb(surrogate, x, y, cfg.select_attack, cfg.attack_steps, seed=cfg.eval_seed + 7)
    found = checkpoints(out)
    if not found:
        raise SettingError("out", f"{out} holds no Truth Maximization checkpoints (ckpt_*.pt)")
    candidates = [(0, None)] + found
    model = copy.deepcopy(pipe.unet).float().eval()
    rows = []
    for i, (step, path) in enumerate(candidates):
        if path is None:
            model.load_state_dict(pipe.unet.state_dict())
        else:
            load_weights(model, path, what="truth-max checkpoint")
        dc = from_pipeline(pipe, schedule=cfg.select_schedule or "5:3,15", seed=cfg.eval_seed)
        dc.unet = model
        clean = (dc.classify(x).predictions == y.cpu()).float().mean().item()
        robust = (dc.classify(x_adv).predictions == y.cpu()).float().mean().item()
        rows.append({"step": step, "path": str(path) if path else pipe.sources["diffusion"],
                     "clean_accuracy": round(clean, 4), "robust_accuracy": round(robust, 4)})
        if progress is not None:
            progress("selecting checkpoints", i + 1, len(candidates))
    best = max(rows, key=lambda r: (r["robust_accuracy"], r["clean_accuracy"], -r["step"]))
    result = {"n": len(idx), "indices": idx.tolist(), "attack": cfg.select_attack, "attack_steps": cfg.attack_steps,
              "training_attack": cfg.attack,
              "surrogate": f"{cfg.surrogate} classifier at t = 0", "schedule": cfg.select_schedule or "5:3,15",
              "checkpoints": rows, "best": best}
    if best["step"] > 0:
        shutil.copyfile(best["path"], Path(out) / "best.pt")
    atomic_write_text(Path(out) / "selection.json", json.dumps(result, indent=2) + "\n")
    return result
