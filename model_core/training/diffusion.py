"""Training class-conditional diffusion models (epsilon prediction, optional learned sigma).

The loss is ``GaussianDiffusion.training_losses``: the epsilon MSE, plus the
variational bound on the variance (Improved DDPM's hybrid loss, with a
stop-gradient on the mean) when the model learns sigma. Timesteps are drawn
uniformly. An exponential moving average of the weights is kept and exported
as ``ema.pt``; it is the model to sample from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from model_core.data import ImageDataset, augment, batch_indices, load_dataset
from model_core.diffusion.buckets import bucket_edges, bucket_stats
from model_core.errors import SettingError
from model_core.training import distributed
from model_core.training.loop import (EMA, LoopResult, RunDir, config_record, count_parameters, linear_lr, mean_of,
                                      run_info, run_loop, save_weights_from_state, seed_everything, step_generator)


@dataclass
class DiffusionTrainConfig:
    model: dict[str, Any]
    process: dict[str, Any] = field(default_factory=lambda: {"diffusion_steps": 1000, "noise_schedule": "linear",
                                                             "learn_sigma": True})
    data: str = "mnist"
    batch_size: int = 64
    total_steps: int = 100_000
    lr_start: float = 1e-4
    lr_end: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    seed: int = 0
    crop_pad: int = 0
    hflip: bool = False
    holdout: float | None = None
    value_range: str = "auto"
    timestep_buckets: int = 4
    ckpt_every: int = 250
    ema_warmup: bool = False  # decay min(ema_decay, (1 + n) / (10 + n)) at update n
    keep_every: int = 0  # keep the exported weights of every checkpoint at a multiple of this (0: off)

    def validate(self) -> None:
        for name in ("batch_size", "total_steps", "ckpt_every", "timestep_buckets"):
            if int(getattr(self, name)) < 1:
                raise SettingError(name, f"{{{name}}} must be >= 1, got {getattr(self, name)}")
        if int(self.keep_every) < 0:
            raise SettingError("keep_every", f"{{keep_every}} must be >= 0 (0: off), got {self.keep_every}")
        if not 0 <= self.ema_decay < 1:
            raise SettingError("ema_decay", f"{{ema_decay}} must be in [0, 1), got {self.ema_decay}")
        if bool(self.model.get("learn_sigma", False)) != bool(self.process.get("learn_sigma", False)):
            raise SettingError("process", "learn_sigma must agree between {model} and {process}", also=("model",))
        if self.lr_start <= 0 or self.lr_end < 0 or self.weight_decay < 0:
            raise SettingError("lr_start", "learning rates ({lr_start}, {lr_end}) must be positive and weight decay "
                               "({weight_decay}) non-negative", also=("lr_end", "weight_decay"))

    def to_dict(self) -> dict:
        return config_record(asdict(self))


def build_unet(model_cfg: dict) -> torch.nn.Module:
    from model_core.models.adm import unet_from_config

    return unet_from_config(model_cfg)


def train_diffusion(cfg: DiffusionTrainConfig, out: str | Path, *, max_minutes: float | None = None,
                    progress: bool = True, device: str = "cpu", dataset: ImageDataset | None = None,
                     stop_at: int | None = None) -> LoopResult:
    """Train (or resume) a diffusion model in run directory ``out``; exports ``model.pt`` and ``ema.pt``."""
    from model_core.diffusion import create_diffusion

    cfg.validate()
    m = cfg.model
    ds = dataset if dataset is not None else load_dataset(
        cfg.data, split="train", holdout=cfg.holdout, image_size=int(m["image_size"]),
        channels=int(m.get("in_channels", 3)), value_range=cfg.value_range)
    if ds.in_channels != int(m.get("in_channels", 3)):
        raise SettingError("data", f"{{data}} has {ds.in_channels} channels but the model ({{model}}) has "
                                   f"in_channels={m.get('in_channels', 3)}", also=("model",))
    class_cond = bool(m.get("class_cond", False))
    if class_cond and ds.num_classes > int(m["num_classes"]):
        raise SettingError("data", f"{{data}} has {ds.num_classes} classes but the model ({{model}}) has "
                                   f"num_classes={m['num_classes']}", also=("model",))
    diffusion = create_diffusion(cfg.process)
    T = diffusion.num_timesteps
    edges = bucket_edges(T, cfg.timestep_buckets)

    dist, device = distributed.context(device)
    seed_everything(cfg.seed)
    model = build_unet(m).to(device)
    net = dist.wrap(model, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr_start, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
    info = run_info("diffusion", cfg.to_dict(), ds.describe(), cfg.seed)
    info["parameters"] = count_parameters(model)

    def step_fn(step: int) -> dict:
        idx = torch.from_numpy(batch_indices(len(ds), cfg.batch_size, cfg.seed, step))
        x0 = augment(ds.images[idx], step_generator(cfg.seed, step, "augment"), cfg.crop_pad, cfg.hflip)
        y = ds.labels[idx]
        t = torch.randint(0, T, (len(idx),), generator=step_generator(cfg.seed, step, "timesteps"))
        noise = torch.randn(x0.shape, generator=step_generator(cfg.seed, step, "noise"))
        if dist.active:  # every rank drew the whole global batch; each keeps its part
            part = dist.part(len(idx))
            x0, y, t, noise = x0[part], y[part], t[part], noise[part]
        x0, y, t, noise = x0.to(device), y.to(device), t.to(device), noise.to(device)
        kwargs = {"y": y} if class_cond else {}
        terms = diffusion.training_losses(net, x0, t, model_kwargs=kwargs, noise=noise)
        loss = terms["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        (loss * dist.loss_weight(len(y), len(idx)) if dist.active else loss).backward()
        optimizer.step()
        per_sample = {"loss": terms["loss"].detach().cpu(), "mse": terms["mse"].detach().cpu()}
        if "vb" in terms:
            per_sample["vb"] = terms["vb"].detach().cpu()
        t_all = t.cpu()
        if dist.active:  # the log describes the global batch, as one process would
            parts = dist.gather((t_all, per_sample))
            t_all = torch.cat([p[0] for p in parts])
            per_sample = {k: torch.cat([p[1][k] for p in parts]) for k in per_sample}
        record = {"loss": float(loss.detach()) if not dist.active else float(per_sample["loss"].mean()),
                  "mse": float(per_sample["mse"].mean())}
        del per_sample["loss"]
        if "vb" in per_sample:
            record["vb"] = float(per_sample["vb"].mean())
        record["buckets"] = bucket_stats(t_all, edges, per_sample)
        return record

    def postfix(recent: list[dict]) -> dict:
        out = {"loss": f"{mean_of(recent, 'loss'):.4f}", "mse": f"{mean_of(recent, 'mse'):.4f}"}
        if cfg.process.get("learn_sigma"):
            out["vb"] = f"{mean_of(recent, 'vb'):.4f}"
        return out

    def export(path: Path) -> None:
        from model_core.checkpoints import save_weights

        meta = {"kind": "diffusion", "model": cfg.model, "process": cfg.process, "seed": cfg.seed,
                "data_fingerprint": info["data"]["fingerprint"], "code_version": info["code_version"],
                "torch": info["torch"]}
        save_weights(model, path / "model.pt", metadata={**meta, "weights": "raw"})
        if ema is not None:
            save_weights_from_state(ema.state_dict(), model, path / "ema.pt", {**meta, "weights": f"ema{cfg.ema_decay}"})

    return run_loop(run=RunDir(Path(out)), info=info, model=model, optimizer=optimizer, ema=ema,
                    total_steps=cfg.total_steps, step_fn=step_fn,
                    lr_fn=lambda s: linear_lr(s, cfg.total_steps, cfg.lr_start, cfg.lr_end), export_fn=export,
                    ckpt_every=cfg.ckpt_every, keep_every=cfg.keep_every, max_minutes=max_minutes, progress=progress, desc="diffusion",
                    postfix_fn=postfix, stop_at=stop_at, dist=dist)
