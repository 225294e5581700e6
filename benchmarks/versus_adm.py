"""One guided ancestral step of ours against the public ADM code (openai/guided-diffusion) on the same weights.

    git clone https://github.com/openai/guided-diffusion /tmp/guided-diffusion   # never into this repository
    .venv/bin/python benchmarks/versus_adm.py --adm-code /tmp/guided-diffusion [--preset demo] [--batch 4]
                                              [--steps 10] [--repeats 5] [--threads 2]

The ADM code is imported from --adm-code (its ``guided_diffusion`` package);
nothing of it is part of this project. Both sides get the same weights (the
preset's, or with ``--preset default`` the seeded random 8M-parameter 32x32
networks of benchmarks/sampling.py) and run the same guided DDPM sampling of
B labels for --steps respaced steps, ADM's as its ``classifier_sample.py``
does it (``p_sample`` with its ``cond_fn``; the classifier's parameters left
trainable, as that script leaves them), ours through the trajectory loop.
First it checks that both networks give the same outputs on the same
inputs. The runs alternate and the best of --repeats is kept (wall and
process CPU time); the ratio is ours over ADM's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from model_core.diffusion import create_diffusion
from model_core.sampling.loop import Trajectory, sample


def ours_and_configs(preset: str):
    if preset == "default":
        sys.path.insert(0, str(Path(__file__).parent))
        from sampling import CLF, UNET, build

        unet, clfs, process, shape = build(None)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # ADM's zero-initialised output layers would make the equality check vacuous
            for p in list(unet.parameters()) + list(clfs["robust"].parameters()):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        return unet, clfs["robust"], process, shape, UNET, CLF
    from model_core.pipeline import get_pipeline

    pipe = get_pipeline(preset, "cpu")
    p = pipe.preset
    return (pipe.unet, pipe.providers["robust"].module, p.diffusion["process"], pipe.shape,
            p.diffusion["model"], p.classifiers["robust"]["model"])


def adm_networks(unet_cfg: dict, clf_cfg: dict):
    from guided_diffusion.unet import EncoderUNetModel, UNetModel

    size = unet_cfg["image_size"]
    rates = lambda res: tuple(size // int(r) for r in str(res).split(","))  # noqa: E731
    mult = lambda text: tuple(int(x) for x in str(text).split(","))  # noqa: E731
    m, c = unet_cfg, clf_cfg
    unet = UNetModel(image_size=size, in_channels=m["in_channels"], model_channels=m["num_channels"],
                     out_channels=m["in_channels"] * (2 if m["learn_sigma"] else 1),
                     num_res_blocks=m["num_res_blocks"], attention_resolutions=rates(m["attention_resolutions"]),
                     dropout=0.0, channel_mult=mult(m["channel_mult"]), num_classes=m["num_classes"],
                     use_fp16=False, num_heads=m["num_heads"], num_head_channels=m["num_head_channels"],
                     num_heads_upsample=m["num_heads_upsample"], use_scale_shift_norm=m["use_scale_shift_norm"],
                     resblock_updown=m["resblock_updown"], use_new_attention_order=m["use_new_attention_order"])
    clf = EncoderUNetModel(image_size=size, in_channels=c["in_channels"], model_channels=c["classifier_width"],
                           out_channels=c["num_classes"], num_res_blocks=c["classifier_depth"],
                           attention_resolutions=rates(c["classifier_attention_resolutions"]),
                           channel_mult=mult(c["channel_mult"]), use_fp16=False,
                           num_head_channels=c["num_head_channels"],
                           use_scale_shift_norm=c["classifier_use_scale_shift_norm"],
                           resblock_updown=c["classifier_resblock_updown"], pool=c["classifier_pool"])
    return unet, clf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adm-code", required=True, type=Path, help="a checkout of openai/guided-diffusion")
    ap.add_argument("--preset", default="demo", help="a preset with weights, or 'default' (random 8M UNet)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    sys.path.insert(0, str(args.adm_code.resolve()))
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion.respace import SpacedDiffusion, space_timesteps

    torch.set_num_threads(args.threads)
    unet, clf, process, shape, unet_cfg, clf_cfg = ours_and_configs(args.preset)
    adm_unet, adm_clf = adm_networks(unet_cfg, clf_cfg)
    adm_unet.load_state_dict(unet.state_dict())
    adm_clf.load_state_dict(clf.state_dict())
    adm_unet.eval().requires_grad_(False)
    adm_clf.eval()

    b = args.batch
    num_classes = unet_cfg["num_classes"]
    x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(999, 0, b).long()
    y = torch.arange(b) % num_classes
    with torch.no_grad():
        unet_diff = float((unet(x, t, y) - adm_unet(x, t, y)).abs().max())
        clf_diff = float((clf(x, t) - adm_clf(x, t)).abs().max())
    print(f"same inputs: UNet max |ours - ADM| {unet_diff:.1e}, classifier logits {clf_diff:.1e}")

    adm_d = SpacedDiffusion(use_timesteps=space_timesteps(1000, str(args.steps)),
                            betas=gd.get_named_beta_schedule(process.get("noise_schedule", "linear"), 1000),
                            model_mean_type=gd.ModelMeanType.EPSILON,
                            model_var_type=gd.ModelVarType.LEARNED_RANGE if process.get("learn_sigma")
                            else gd.ModelVarType.FIXED_LARGE,
                            loss_type=gd.LossType.MSE, rescale_timesteps=False)

    def cond_fn(x_t, t_in, y=None):  # ADM's classifier_sample.py
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            log_probs = F.log_softmax(adm_clf(x_in, t_in), dim=-1)
            selected = log_probs[range(len(log_probs)), y.view(-1)]
            return torch.autograd.grad(selected.sum(), x_in)[0] * args.scale

    def adm():
        img = torch.randn(b, *shape)
        with torch.no_grad():
            for i in reversed(range(args.steps)):
                img = adm_d.p_sample(adm_unet, img, torch.full((b,), i), clip_denoised=True, cond_fn=cond_fn,
                                     model_kwargs={"y": y})["sample"]
        return img

    d = create_diffusion(process, str(args.steps))
    trajectories = [Trajectory(int(label), 100 + i, "robust", args.scale) for i, label in enumerate(y)]

    def ours():
        return sample(d, unet, {"robust": clf}, trajectories, shape, sampler="ddpm")

    fns = {"adm": adm, "ours": ours}
    for fn in fns.values():
        fn()
    best = {name: {"wall": float("inf"), "cpu": float("inf")} for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best[name]["wall"] = min(best[name]["wall"], time.perf_counter() - wall)
            best[name]["cpu"] = min(best[name]["cpu"], time.process_time() - cpu)
    print(f"config: {args.preset}, UNet {sum(p.numel() for p in unet.parameters()):,} params, B={b}, "
          f"{args.steps} steps, {args.threads} threads, torch {torch.__version__}")
    for clock in ("wall", "cpu"):
        a, o = best["adm"][clock] / args.steps, best["ours"][clock] / args.steps
        print(f"[{clock:4s}] one guided ancestral step: ADM {a * 1e3:.1f} ms, ours {o * 1e3:.1f} ms, "
              f"ours over ADM {o / a:.2f}  (goal <= 0.67)")


if __name__ == "__main__":
    main()
