"""Time per guided sampling step on CPU: the step against its network calls alone, pair mode, speed settings.

    .venv/bin/python benchmarks/sampling.py [--preset demo] [--batch 4] [--steps 20] [--repeats 5] [--threads 2]
                                            [--sampler ddpm] [--options] [--skip-pair]

All runs use the same ADM-architecture models (random weights; the cost of a
step does not depend on the weights): by default a 32x32 RGB UNet of 8M
parameters, with --preset the preset's own diffusion model and classifier
configs (e.g. `--preset demo --batch 1 --steps 100` times one demo request).
Every comparison is measured in this process, its runs interleaved
(A B A B ...) and the best of --repeats kept, so a machine busy with other
work slows both sides alike.

1. **Step over networks** (the goal is at most 1.05): one guided trajectory
   batch (robust, B) is sampled while every UNet and classifier call records
   its inputs; then the same calls are replayed alone on the same tensors
   (UNet forward under no_grad; classifier forward, log-softmax and backward
   to x_t, as the guidance gradient does). The ratio is the whole step (noise
   draws, sampler arithmetic, gathers, callbacks' absence included) over its
   network calls.
2. **Pair mode**: robust + vanilla batched (one UNet forward of 2B per step)
   against the same 2B trajectories as two calls of B, and unguided.
3. **Speed settings** (--options): the guided step with each of
   channels-last, bf16 autocast and torch.compile (model_core/runtime.py,
   settings RGUIDE_CHANNELS_LAST / RGUIDE_AUTOCAST / RGUIDE_COMPILE) against
   the default, with the largest change of the output (in [-1, 1]) and the
   share of 8-bit pixels that change. torch.compile's first call (compilation)
   is timed separately and not counted in its steps.
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Callable

import torch

from model_core.diffusion import create_diffusion
from model_core.images import to_uint8
from model_core.models.adm import classifier_from_config, unet_from_config
from model_core.sampling.guidance import log_prob_grad
from model_core.sampling.loop import Trajectory, sample

UNET = dict(image_size=32, in_channels=3, num_classes=10, num_channels=64, num_res_blocks=2, channel_mult="1,2,2",
            learn_sigma=True, class_cond=True, attention_resolutions="16,8", num_heads=4, num_head_channels=-1,
            num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_fp16=False,
            use_new_attention_order=False)
CLF = dict(image_size=32, in_channels=3, num_classes=10, classifier_width=32, classifier_depth=2,
           channel_mult="1,2,2,4", classifier_attention_resolutions="16,8", num_head_channels=64,
           classifier_use_scale_shift_norm=True, classifier_resblock_updown=True, classifier_pool="attention",
           classifier_use_fp16=False)


def build(preset: str | None):
    unet_cfg, clf_cfg, process = UNET, CLF, {"learn_sigma": True}
    if preset:
        from model_core.presets import get_preset

        p = get_preset(preset)
        unet_cfg, process = p.diffusion["model"], p.diffusion["process"]
        clf_cfg = p.classifiers["robust"]["model"]
    torch.manual_seed(0)
    unet = unet_from_config(unet_cfg).eval().requires_grad_(False)
    clfs = {m: classifier_from_config(clf_cfg).eval().requires_grad_(False) for m in ("robust", "vanilla")}
    shape = (unet_cfg["in_channels"], unet_cfg["image_size"], unet_cfg["image_size"])
    return unet, clfs, process, shape


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, the functions alternating within a round."""
    return interleaved_clocks(fns, repeats)["wall"]


def interleaved_clocks(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Best wall time and best process CPU time (all threads) of each function, alternating within a round.

    On a machine shared with other work the CPU time is the steadier of the two: time spent descheduled
    does not count. Both are reported.
    """
    for fn in fns.values():
        fn()  # warm-up: allocator, oneDNN kernels
    best = {clock: {name: float("inf") for name in fns} for clock in ("wall", "cpu")}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best["wall"][name] = min(best["wall"][name], time.perf_counter() - wall)
            best["cpu"][name] = min(best["cpu"][name], time.process_time() - cpu)
    return best


class Recorder(torch.nn.Module):
    """Passes calls through to ``inner`` and keeps a copy of every call's inputs."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t, *args, **kwargs):
        self.calls.append((x.detach().clone(), t.clone(), *args, {k: v.clone() for k, v in kwargs.items()}))
        return self.inner(x, t, *args, **kwargs)


def step_over_networks(d, unet, clf, trajectories, shape, sampler: str, repeats: int) -> dict[str, dict[str, float]]:
    """Per step, for each clock: the guided step, its network calls replayed alone, and the UNet's part."""
    labels = torch.tensor([tr.label for tr in trajectories])
    rec_unet, rec_clf = Recorder(unet), Recorder(clf)
    sample(d, rec_unet, {"robust": rec_clf}, trajectories, shape, sampler=sampler)
    calls = list(zip(rec_unet.calls, rec_clf.calls))
    assert len(calls) == d.num_timesteps

    def whole():
        sample(d, unet, {"robust": clf}, trajectories, shape, sampler=sampler)

    def networks():  # the same calls in the same order: per step a UNet forward, then the guidance gradient
        for (x, t, kwargs), (xc, tc, _) in calls:
            with torch.no_grad():
                unet(x, t, **kwargs)
            log_prob_grad(clf, xc, tc, labels)

    def unet_alone():
        with torch.no_grad():
            for (x, t, kwargs), _ in calls:
                unet(x, t, **kwargs)

    best = interleaved_clocks({"step": whole, "networks": networks, "unet": unet_alone}, repeats)
    n = d.num_timesteps
    return {clock: {"step": v["step"] / n, "networks": v["networks"] / n, "unet_share": v["unet"] / v["networks"]}
            for clock, v in best.items()}


def options_table(d, unet, clf, trajectories, shape, sampler: str, repeats: int) -> list[str]:
    import os
    from contextlib import nullcontext

    from model_core import runtime, settings

    variants = {"channels-last": {settings.CHANNELS_LAST: "1"}, "bf16 autocast": {settings.AUTOCAST: "bf16"},
                "torch.compile": {settings.COMPILE: "default"}}

    def configured(env: dict[str, str]) -> Callable[[], torch.Tensor]:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:  # the pipeline's own preparation, under these settings
            u, c = runtime.prepare(copy.deepcopy(unet)), runtime.prepare(copy.deepcopy(clf))
            dtype = runtime.DTYPES.get(settings.autocast() or "")
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

        def run() -> torch.Tensor:
            with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
                return sample(d, u, {"robust": c}, trajectories, shape, sampler=sampler)
        return run

    base = configured({})
    reference = base()
    lines = []
    for name, env in variants.items():
        fn = configured(env)
        start = time.perf_counter()
        out = fn()  # first call: compilation for torch.compile
        first = time.perf_counter() - start
        best = interleaved({"default": base, name: fn}, repeats)
        moved = float((out - reference).abs().max())
        pixels = float((to_uint8(out) != to_uint8(reference)).mean())
        lines.append(f"{name:15s} {best[name] / d.num_timesteps * 1e3:8.1f} ms/step  ratio vs default "
                     f"{best[name] / best['default']:.2f}  max |change| {moved:.1e}, 8-bit pixels changed "
                     f"{pixels:.2%}  (first call {first:.1f} s)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4, help="labels per request (B)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sampler", default="ddpm", help="the sampler of every run (default ddpm, the paper's)")
    ap.add_argument("--preset", default=None, help="time this preset's architectures instead of the default UNet")
    ap.add_argument("--options", action="store_true", help="also time the speed settings (section 3)")
    ap.add_argument("--skip-pair", action="store_true", help="leave out the pair-mode section")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unet, clfs, process, shape = build(args.preset)
    d = create_diffusion(process, str(args.steps))
    num_classes = unet.num_classes or 10
    labels = list(range(args.batch))
    seeds = [1000 + i for i in labels]

    def trajs(method, scale):
        return [Trajectory(y % num_classes, s, method, scale) for y, s in zip(labels, seeds)]

    size = f"{shape[1]}x{shape[2]}x{shape[0]}"
    print(f"config: {args.preset or 'default'} {size} UNet {sum(p.numel() for p in unet.parameters()):,} params, "
          f"classifier {sum(p.numel() for p in clfs['robust'].parameters()):,} params, B={args.batch}, "
          f"{args.steps} steps, sampler {args.sampler}, {args.threads} threads, torch {torch.__version__}")

    timing = step_over_networks(d, unet, clfs["robust"], trajs("robust", 1.0), shape, args.sampler, args.repeats)
    for clock, v in timing.items():
        print(f"[{clock:4s}] guided step (robust, B={args.batch}) {v['step'] * 1e3:8.1f} ms, its network calls "
              f"alone {v['networks'] * 1e3:8.1f} ms (UNet forward {v['unet_share']:.0%} of them): "
              f"step over networks {v['step'] / v['networks']:.3f}  (goal <= 1.05)")
    step = timing["wall"]["step"]

    if not args.skip_pair:
        run = lambda trs: sample(d, unet, clfs, trs, shape, sampler=args.sampler)  # noqa: E731
        best = interleaved({
            "sequential": lambda: (run(trajs("robust", 1.0)), run(trajs("vanilla", 0.5))),
            "pair": lambda: run(trajs("robust", 1.0) + trajs("vanilla", 0.5)),
            "unguided": lambda: run(trajs("none", 0.0)),
        }, args.repeats)
        t_seq, t_pair, t_none = (best[k] / args.steps for k in ("sequential", "pair", "unguided"))
        print(f"pair, sequential (baseline): {t_seq * 1e3:8.1f} ms/step  (2B={2 * args.batch} guided trajectories)")
        print(f"pair, batched:               {t_pair * 1e3:8.1f} ms/step  ratio vs baseline {t_pair / t_seq:.2f}")
        print(f"unguided (B={args.batch}):             {t_none * 1e3:8.1f} ms/step  ratio vs baseline "
              f"{t_none / t_seq:.2f}")
        print(f"guided pair costs {t_pair / t_none:.2f}x an unguided step of B; whole request of {args.steps} "
              f"steps: pair {t_pair * args.steps:.2f} s, robust only {step * args.steps:.2f} s, "
              f"unguided {t_none * args.steps:.2f} s")

    if args.options:
        print("speed settings (robust, B={}; default = all off):".format(args.batch))
        for line in options_table(d, unet, clfs["robust"], trajs("robust", 1.0), shape, args.sampler,
                                  args.repeats):
            print("  " + line)


if __name__ == "__main__":
    main()
