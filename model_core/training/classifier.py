"""Training time-dependent classifiers p_phi(y | x_t, t): vanilla and robust (Kawar et al., Eq. 5).

Each step draws a batch (x_0, y), a timestep t ~ Uniform{0..T-1} per sample (or
skewed toward small t with ``t_power`` > 1, a departure from the paper) and
noise, forms x_t = q_sample(x_0, t), and minimises the cross-entropy of
``classifier(x, t)`` at the true label, where x is x_t (vanilla) or the PGD
attack on x_t with per-sample early stopping (robust). AdamW with weight decay
and a learning rate annealed linearly from ``lr_start`` to ``lr_end``; the
paper's ImageNet values are the defaults (3e-4 -> 6e-5, wd 0.05, batch 128,
L2 eps 0.5, step 0.083, 7 steps).

Every step logs the loss and, per timestep bucket, the clean and adversarial
accuracy, the fraction of samples the attack stopped on early and the mean
number of attack steps used (``metrics.jsonl`` in the run directory).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from model_core.errors import SettingError
from model_core.robustness.attacks import NORMS, pgd_untargeted
from model_core.robustness.defaults import PAPER_ATTACK
from model_core.data import ImageDataset, augment, batch_indices, load_dataset
from model_core.diffusion.buckets import bucket_edges, bucket_stats
from model_core.training import distributed
from model_core.training.loop import (EMA, LoopResult, RunDir, config_record, count_parameters, linear_lr, mean_of,
                                      run_info, run_loop, save_weights_from_state, seed_everything, step_generator)

DEFAULT_PROCESS = {"diffusion_steps": 1000, "noise_schedule": "linear"}


@dataclass
class ClassifierTrainConfig:
    model: dict[str, Any]
    data: str = "mnist"
    process: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_PROCESS))
    robust: bool = False
    attack: str = PAPER_ATTACK.attack
    eps: float = PAPER_ATTACK.eps
    step_size: float = PAPER_ATTACK.step_size
    attack_steps: int = PAPER_ATTACK.attack_steps
    batch_size: int = 128
    total_steps: int = 240_000
    lr_start: float = 3e-4
    lr_end: float = 6e-5
    weight_decay: float = 0.05
    ema_decay: float = 0.0
    seed: int = 0
    crop_pad: int = 0
    hflip: bool = False
    holdout: float | None = None
    value_range: str = "auto"
    timestep_buckets: int = 4
    ckpt_every: int = 250
    ema_warmup: bool = False  # decay min(ema_decay, (1 + n) / (10 + n)) at update n
    keep_every: int = 0  # keep the exported weights of every checkpoint at a multiple of this (0: off)
    # t = floor(T * u**t_power), u ~ U[0, 1): 1 is the paper's uniform draw; > 1 puts more of each batch at
    # small t, where guidance shapes the image's details and where a classifier can be made robust at all.
    t_power: float = 1.0

    def validate(self) -> None:
        if self.attack not in NORMS:
            raise SettingError("attack", f"{{attack}} must be one of {NORMS}, got {self.attack!r}")
        for name in ("batch_size", "total_steps", "ckpt_every", "timestep_buckets"):
            if int(getattr(self, name)) < 1:
                raise SettingError(name, f"{{{name}}} must be >= 1, got {getattr(self, name)}")
        if int(self.keep_every) < 0:
            raise SettingError("keep_every", f"{{keep_every}} must be >= 0 (0: off), got {self.keep_every}")
        if self.robust and (self.eps <= 0 or self.step_size <= 0 or self.attack_steps < 1):
            raise SettingError("attack_steps", "robust training needs {eps} > 0, {step_size} > 0 and "
                               "{attack_steps} >= 1", also=("eps", "step_size"))
        if not self.t_power > 0:
            raise SettingError("t_power", f"{{t_power}} must be > 0 (1: uniform t), got {self.t_power}")
        if self.lr_start <= 0 or self.lr_end < 0 or self.weight_decay < 0:
            raise SettingError("lr_start", "learning rates ({lr_start}, {lr_end}) must be positive and weight decay "
                               "({weight_decay}) non-negative", also=("lr_end", "weight_decay"))

    def to_dict(self) -> dict:
        return config_record(asdict(self))


def _load_data(cfg: ClassifierTrainConfig, split: str) -> ImageDataset:
    m = cfg.model
    return load_dataset(cfg.data, split=split, holdout=cfg.holdout, image_size=int(m["image_size"]),
                        channels=int(m.get("in_channels", 3)), value_range=cfg.value_range)


def _check_data_fits(ds: ImageDataset, cfg: ClassifierTrainConfig) -> None:
    m = cfg.model
    if ds.in_channels != int(m.get("in_channels", 3)):
        raise SettingError("data", f"{{data}} has {ds.in_channels} channels but the model config ({{model}}) says "
                                   f"in_channels={m.get('in_channels', 3)}", also=("model",))
    if ds.num_classes > int(m["num_classes"]):
        raise SettingError("data", f"{{data}} has {ds.num_classes} classes but the model config ({{model}}) says "
                                   f"num_classes={m['num_classes']}", also=("model",))


def sample_timesteps(T: int, n: int, power: float, generator: torch.Generator) -> torch.Tensor:
    """n training timesteps in [0, T): uniform for power 1 (the same draws as before the knob existed)."""
    if power == 1.0:
        return torch.randint(0, T, (n,), generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (u.pow(power) * T).long().clamp_(0, T - 1)


def build_classifier(model_cfg: dict) -> torch.nn.Module:
    from model_core.models.adm import classifier_from_config

    return classifier_from_config(model_cfg)


def train_classifier(cfg: ClassifierTrainConfig, out: str | Path, *, max_minutes: float | None = None,
                     progress: bool = True, device: str = "cpu", dataset: ImageDataset | None = None,
                     stop_at: int | None = None) -> LoopResult:
    """Train (or resume) a classifier in run directory ``out``; exports ``model.pt`` (and ``ema.pt``)."""
    from model_core.diffusion import create_diffusion

    cfg.validate()
    ds = dataset if dataset is not None else _load_data(cfg, "train")
    _check_data_fits(ds, cfg)
    diffusion = create_diffusion(cfg.process)
    T = diffusion.num_timesteps
    edges = bucket_edges(T, cfg.timestep_buckets)

    dist, device = distributed.context(device)
    seed_everything(cfg.seed)
    model = build_classifier(cfg.model).to(device)
    net = dist.wrap(model, device)  # what the loss is computed through; the attack uses the bare model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr_start, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
    images, labels = ds.images, ds.labels
    info = run_info("robust-classifier" if cfg.robust else "vanilla-classifier", cfg.to_dict(), ds.describe(),
                    cfg.seed)
    info["parameters"] = count_parameters(model)

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(len(ds), cfg.batch_size, cfg.seed, step))
        x0 = augment(images[idx], step_generator(cfg.seed, step, "augment"), cfg.crop_pad, cfg.hflip)
        y = labels[idx]
        t = sample_timesteps(T, len(idx), cfg.t_power, step_generator(cfg.seed, step, "timesteps"))
        noise = torch.randn(x0.shape, generator=step_generator(cfg.seed, step, "noise"))
        if dist.active:  # every rank drew the whole global batch; each keeps its part
            part = dist.part(len(idx))
            x0, y, t, noise = x0[part], y[part], t[part], noise[part]
        x0, y, t, noise = x0.to(device), y.to(device), t.to(device), noise.to(device)
        x_t = diffusion.q_sample(x0, t, noise)
        record: dict[str, Any] = {}
        if cfg.robust:
            res = pgd_untargeted(model, x_t, t, y, norm=cfg.attack, eps=cfg.eps, step_size=cfg.step_size,
                                 steps=cfg.attack_steps)
            x_in = res.x_adv
            per_sample = {"clean_acc": res.clean_correct, "adv_acc": res.adv_correct,
                          "stopped_early": res.stopped_early, "attack_steps": res.steps_used}
        else:
            x_in = x_t
        logits = net(x_in, t)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        (loss * dist.loss_weight(len(y), len(idx)) if dist.active else loss).backward()
        optimizer.step()
        train_correct = (logits.detach().argmax(-1) == y)
        if not cfg.robust:
            per_sample = {"clean_acc": train_correct}
        loss_value, t_all = float(loss.detach()), t.cpu()
        per_sample = {k: v.cpu() for k, v in per_sample.items()}
        if dist.active:  # the log describes the global batch, as one process would
            loss_value, t_all, per_sample = _global_metrics(dist, loss_value, len(y), t_all, per_sample)
        record["loss"] = loss_value
        for key, v in per_sample.items():
            record[key] = float(v.float().mean())
        record["buckets"] = bucket_stats(t_all, edges, per_sample)
        return record

    def postfix(recent: list[dict]) -> dict:
        out = {"loss": f"{mean_of(recent, 'loss'):.3f}", "acc": f"{mean_of(recent, 'clean_acc'):.3f}"}
        if cfg.robust:
            out["adv_acc"] = f"{mean_of(recent, 'adv_acc'):.3f}"
            out["atk_steps"] = f"{mean_of(recent, 'attack_steps'):.2f}"
        return out

    def export(path: Path) -> None:
        from model_core.checkpoints import save_weights

        meta = {"kind": info["kind"], "model": cfg.model, "process": cfg.process, "seed": cfg.seed,
                "data_fingerprint": info["data"]["fingerprint"], "code_version": info["code_version"],
                "torch": info["torch"]}
        save_weights(model, path / "model.pt", metadata={**meta, "weights": "raw"})
        if ema is not None:
            save_weights_from_state(ema.state_dict(), model, path / "ema.pt", {**meta, "weights": f"ema{cfg.ema_decay}"})

    return run_loop(run=RunDir(Path(out)), info=info, model=model, optimizer=optimizer, ema=ema,
                    total_steps=cfg.total_steps, step_fn=step_fn,
                    lr_fn=lambda s: linear_lr(s, cfg.total_steps, cfg.lr_start, cfg.lr_end), export_fn=export,
                    ckpt_every=cfg.ckpt_every, keep_every=cfg.keep_every, max_minutes=max_minutes, progress=progress,
                    desc="robust classifier" if cfg.robust else "vanilla classifier", postfix_fn=postfix, stop_at=stop_at,
                    dist=dist)


def _global_metrics(dist, loss: float, n: int, t: torch.Tensor, per_sample: dict[str, torch.Tensor]):
    """The global batch's mean loss, timesteps and per-sample metrics from every rank's part."""
    parts = dist.gather((loss * n, n, t, per_sample))
    total = sum(p[1] for p in parts)
    return (sum(p[0] for p in parts) / total, torch.cat([p[2] for p in parts]),
            {k: torch.cat([p[3][k] for p in parts]) for k in per_sample})
