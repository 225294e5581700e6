"""``rguide viz gradients|maximize|trajectory|compare|reproduce`` and ``rguide sweep``: looking inside guidance.

Each command resolves its flags through ``model_core.analysis.requests``
(the resolver the API uses too), runs the analysis with a progress bar, and
writes OUT/<kind>.png (and a table where there is one) with OUT/<kind>.json,
the sidecar from which ``rguide viz reproduce OUT/<kind>.json`` makes the
same bytes again. Uploaded images are copied to OUT/inputs/ by hash.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from model_core.sampling import registry as samplers
from rguide.cli import CLIError

# How the resolver's fields are spelled on these command lines.
FLAGS = {"preset": "--preset", "classifiers": "--classifiers", "images": "--images", "heldout": "--heldout",
         "seed": "--seed", "seeds": "--seeds", "show": "--show", "timesteps": "--timesteps", "buckets": "--buckets",
         "threshold": "--threshold", "targets": "--targets", "eps": "--eps", "attack_steps": "--attack-steps",
         "step_size": "--step-size", "judge": "--judge", "labels": "--labels", "arms": "--arms",
         "frames": "--frames", "steps": "--steps", "sampler": "--sampler", "methods": "--guidance",
         "scales": "--scales", "per_class": "--per-class", "k": "--k"}


def register(sub: argparse._SubParsersAction) -> None:
    viz = sub.add_parser("viz", help="look inside guidance: gradient maps, class maximisation, trajectories, "
                                     "comparison sheets (paper Figures 2-5)",
                         description="Each command writes OUT/<kind>.png and OUT/<kind>.json (settings, seeds, "
                                     "provenance, summary numbers); 'rguide viz reproduce OUT/<kind>.json' makes "
                                     "the same bytes again.")
    vsub = viz.add_subparsers(dest="viz_command", metavar="ANALYSIS")
    vsub.required = True

    p = vsub.add_parser("gradients", help="input gradients of log p(y | x_t, t) per classifier and timestep, with "
                                          "alignment numbers (Figure 3)")
    _common(p)
    _images(p, labels_help="the true class of each --images file (required with --images)")
    p.add_argument("--classifiers", default=None, help="comma-separated (default: all of the preset's)")
    p.add_argument("--show", type=int, default=None, help="images in the picture (default 4); the numbers use all")
    p.add_argument("--timesteps", default=None, help="comma-separated timesteps of the picture "
                                                     "(default: 0, 0.1T, 0.2T, 0.4T, 0.6T)")
    p.add_argument("--buckets", type=int, default=None, help="timestep buckets of the numbers (default 4)")
    p.add_argument("--threshold", type=float, default=None,
                   help="clean pixels above this value ([-1, 1]) are the object (default 0)")
    p.set_defaults(func=run_viz, kind="gradients")

    p = vsub.add_parser("maximize", help="class maximisation: targeted L2 PGD at t = 0 per classifier, judged by "
                                         "another network (Figure 4)")
    _common(p)
    _images(p, labels_help="the true class of each --images file (optional)")
    p.add_argument("--classifiers", default=None, help="comma-separated (default: all of the preset's)")
    p.add_argument("--targets", default=None, help="comma-separated target class per image "
                                                   "(default: a random other class per image, from --seed)")
    p.add_argument("--show", type=int, default=None, help="images in the picture (default 6); the rates use all")
    p.add_argument("--eps", type=float, default=None,
                   help="L2 radius (default: the paper's 100 for 128x128x3, scaled by sqrt(d/49152))")
    p.add_argument("--attack-steps", type=int, default=None, help="PGD steps (default: the paper's 7)")
    p.add_argument("--step-size", type=float, default=None, help="default: 2.5 * eps / steps (paper App. E)")
    p.add_argument("--judge", default=None, help="the network that reads the results: 'features' (the preset's "
                                                 "digit CNN, default), 'none', or a file (a digits feature network "
                                                 "or a TorchScript classifier of [-1, 1] images)")
    p.set_defaults(func=run_viz, kind="maximize")

    for kind, helptext in (("trajectory", "the predicted x_0 along guided runs, one row per arm (Figure 5)"),
                           ("compare", "seed-matched sheet: every arm side by side per label and seed (Figure 2)")):
        p = vsub.add_parser(kind, help=helptext)
        _common(p)
        p.add_argument("--labels", required=True, help="comma-separated class indices or names")
        p.add_argument("--seeds", default=None, help="comma-separated seeds, one per label (default: SEED+i)")
        p.add_argument("--arms", default=None, help="comma-separated arms of the preset or METHOD=SCALE "
                                                    "(default: none, the comparison's baseline, its first arm)")
        p.add_argument("--steps", default=None, help="respacing, e.g. 100 or ddim50 (default: the preset's)")
        p.add_argument("--sampler", default=None, choices=samplers.names())
        if kind == "trajectory":
            p.add_argument("--frames", type=int, default=None, help="frames per run (default 8)")
        p.set_defaults(func=run_viz, kind=kind)

    p = vsub.add_parser("reproduce", help="run an analysis again from its JSON sidecar and compare the bytes")
    p.add_argument("sidecar", type=Path)
    p.add_argument("--out", type=Path, default=None, help="where to write (default: SIDECAR's folder/reproduced)")
    p.add_argument("--inputs", type=Path, default=None, help="folder of uploaded inputs (default: beside SIDECAR)")
    p.add_argument("--device", default=None, help="default: the device the sidecar records")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the number the sidecar records, since CPU kernels may round "
                        "differently with another)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_reproduce)

    p = sub.add_parser("sweep", help="FID, precision, recall and label accuracy per method across scales, as "
                                     "curves and the paper's table (Tables 5, 6)",
                       description="rguide evaluate's numbers (same seeds in every row) drawn as precision "
                                   "against recall and FID against scale; OUT/sweep.png, OUT/sweep.md, "
                                   "OUT/sweep.json. Samples are cached under OUT/samples, so a re-run continues.")
    _common(p)
    p.add_argument("--guidance", default=None,
                   help="comma-separated methods (default: none and every classifier network; 'diffusion' only "
                        "when named, for its cost)")
    p.add_argument("--scales", default=None, help="comma-separated scales (default 0.25,0.5,1,2)")
    p.add_argument("--per-class", type=int, default=None, help="images per class and row (default 50)")
    p.add_argument("--steps", default=None)
    p.add_argument("--sampler", default=None, choices=samplers.names())
    p.add_argument("--k", type=int, default=None, help="k of the k-NN precision/recall (default 3)")
    p.set_defaults(func=run_viz, kind="sweep")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="preset name (default: $RGUIDE_PRESET, else demo, else tiny)")
    p.add_argument("--seed", type=int, default=None, help="seed of noise, picks and targets; first sample seed "
                                                          "(default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _images(p: argparse.ArgumentParser, labels_help: str) -> None:
    p.add_argument("--images", default=None, help="comma-separated PNG files of the preset's size")
    p.add_argument("--labels", default=None, help=labels_help)
    p.add_argument("--heldout", type=int, default=None,
                   help="without --images: how many held-out images (default: all), picked with --seed")


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def _ints(text: str | None, flag: str) -> list[int] | None:
    parts = _split(text)
    if parts is None:
        return None
    try:
        return [int(s) for s in parts]
    except ValueError:
        raise CLIError(f"{flag} {text!r}: write comma-separated whole numbers") from None


def _floats(text: str | None, flag: str) -> list[float] | None:
    parts = _split(text)
    if parts is None:
        return None
    try:
        return [float(s) for s in parts]
    except ValueError:
        raise CLIError(f"{flag} {text!r}: write comma-separated numbers") from None


def fields_from(args: argparse.Namespace) -> dict:
    """The resolver's fields from this command's flags (None: not given, the resolver's default)."""
    kind = args.kind
    f: dict = {"seed": args.seed}
    if kind in ("gradients", "maximize"):
        f["classifiers"] = _split(args.classifiers)
        f["show"] = args.show
        f["heldout"] = args.heldout
        labels = _split(args.labels)
        if args.images:
            paths = _split(args.images)
            if labels is not None and len(labels) != len(paths):
                raise CLIError(f"--labels gives {len(labels)} labels for {len(paths)} --images files")
            images = []
            for i, name in enumerate(paths):
                try:
                    data = Path(name).expanduser().read_bytes()
                except OSError as exc:
                    raise CLIError(f"--images {name}: {exc.strerror or exc}") from None
                images.append({"png": data, "label": _label(labels[i]) if labels else None})
            f["images"] = images
        elif labels is not None:
            raise CLIError("--labels names the classes of --images files; held-out images carry their own")
    if kind == "gradients":
        f.update(timesteps=_ints(args.timesteps, "--timesteps"), buckets=args.buckets, threshold=args.threshold)
    elif kind == "maximize":
        f.update(targets=[_label(t) for t in _split(args.targets)] if args.targets else None, eps=args.eps,
                 attack_steps=args.attack_steps, step_size=args.step_size, judge=args.judge)
    elif kind in ("trajectory", "compare"):
        f.update(labels=[_label(x) for x in _split(args.labels) or []], seeds=_ints(args.seeds, "--seeds"),
                 arms=_split(args.arms), steps=args.steps, sampler=args.sampler)
        if args.seeds is not None and args.seed is not None:
            raise CLIError("give --seed or --seeds, not both")
        if kind == "trajectory":
            f["frames"] = args.frames
    elif kind == "sweep":
        f.update(methods=_split(args.guidance), scales=_floats(args.scales, "--scales"), per_class=args.per_class,
                 steps=args.steps, sampler=args.sampler, k=args.k)
    return f


def _label(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def flag_message(error) -> str:
    """A resolver problem, named by the flag that set its field (an image's label is --labels, item i)."""
    head = str(error.field[0])
    if head == "images" and len(error.field) >= 3:
        sub = {"label": "--labels", "png": "--images", "target": "--targets"}.get(str(error.field[2]), "--images")
        return f"{sub} (item {int(error.field[1]) + 1}): {error.message}"
    flag = FLAGS.get(head, head)
    item = f" (item {int(error.field[1]) + 1})" if len(error.field) > 1 and isinstance(error.field[1], int) else ""
    return f"{flag}{item}: {error.message}"


def _bar(args, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, unit="step", disable=args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def run_viz(args: argparse.Namespace) -> int:
    from model_core.analysis import sidecar
    from model_core.analysis.requests import resolve_analysis
    from model_core.generation_request import RequestInvalid

    try:
        resolved = resolve_analysis(args.kind, fields_from(args), preset=args.preset, allow_paths=True)
    except RequestInvalid as exc:
        raise CLIError("; ".join(flag_message(e) for e in exc.errors)) from None
    uploads = {u.sha256: u.png for u in resolved.uploads}
    bar, progress = _bar(args, f"{args.kind} {resolved.preset}")
    kwargs = {"work_dir": args.out} if args.kind == "sweep" else {}
    try:
        output = sidecar.run(args.kind, resolved.settings, find_upload=uploads.get if uploads else None,
                             device=args.device, progress=progress, **kwargs)
    except (ValueError, FileNotFoundError) as exc:
        from model_core.errors import message

        raise CLIError(message(exc, FLAGS)) from None
    finally:
        bar.close()
    path = sidecar.write(output, args.out, uploads)
    _print_summary(output)
    print(f"wrote {', '.join(str(args.out / n) for n in output.files)} and {path}")
    return 0


def _print_summary(output) -> None:
    for name, data in output.files.items():
        if name.endswith(".md"):
            print(data.decode())


def run_reproduce(args: argparse.Namespace) -> int:
    from model_core.analysis import sidecar

    out = args.out or args.sidecar.parent / "reproduced"
    threads = args.threads or sidecar.read(args.sidecar).get("provenance", {}).get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    bar, progress = _bar(args, f"reproduce {args.sidecar.name}")
    try:
        output, verdict = sidecar.reproduce(args.sidecar, inputs_dir=args.inputs, device=args.device,
                                            progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        bar.close()
    old = sidecar.read(args.sidecar)
    uploads = {}
    if old.get("inputs"):
        find = sidecar.upload_finder(args.inputs or args.sidecar.parent / sidecar.INPUTS_DIR)
        uploads = {ref["sha256"]: find(ref["sha256"]) for ref in old["inputs"]}
    path = sidecar.write(output, out, uploads)
    if verdict.identical:
        print(f"identical: every file ({', '.join(output.files)}) and the summary match {args.sidecar}; wrote {path}")
        return 0
    print(f"DIFFERENT from {args.sidecar}: " + "; ".join(verdict.differences))
    if verdict.environment:
        print("provenance that differs (code, libraries, weights, device or threads): " +
              ", ".join(verdict.environment))
    print(f"wrote {path}")
    return 1
