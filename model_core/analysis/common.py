"""What the torch analyses share: their inputs as tensors, per-image generators, the judge network, provenance."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from model_core.analysis.inputs import decode_upload, heldout_indices
from model_core.errors import InputError

Progress = Callable[[int, int], None]  # (units done, units in all); may raise to cancel
UploadFinder = Callable[[str], bytes]  # sha256 -> the normalised PNG's bytes


@dataclass
class Inputs:
    x0: torch.Tensor            # float32 (N, C, H, W) in [-1, 1]
    labels: list[int | None]    # true classes where known
    refs: list[str]             # "heldout:<index>" or "upload:<sha256>", per image


def load_inputs(preset, inputs: dict, find_upload: UploadFinder | None) -> Inputs:
    """The images of a resolved ``inputs`` setting: uploads through ``find_upload``, or held-out picks."""
    if "uploads" in inputs:
        if find_upload is None:
            raise InputError("this analysis was run on uploaded images: give the folder that holds them")
        arrays, labels, refs = [], [], []
        for ref in inputs["uploads"]:
            pixels = decode_upload(find_upload(ref["sha256"]), image_size=preset.image_size,
                                   channels=preset.in_channels)
            arrays.append(np.moveaxis(pixels, -1, 0).astype(np.float32) / 127.5 - 1.0)
            labels.append(ref.get("label"))
            refs.append(f"upload:{ref['sha256']}")
        return Inputs(torch.from_numpy(np.stack(arrays)), labels, refs)
    from model_core.data import heldout_split, load_dataset

    spec = inputs["heldout"]
    ds = load_dataset(spec["data"], split=heldout_split(spec["data"]), image_size=preset.image_size,
                      channels=preset.in_channels)
    count = spec["count"] or min(len(ds), spec.get("limit") or len(ds))
    if count > len(ds):
        raise InputError(f"heldout {count}: the held-out set of {spec['data']!r} has only {len(ds)} images")
    idx = heldout_indices(len(ds), count, int(spec["seed"]))
    return Inputs(ds.images[idx].clone(), [int(ds.labels[i]) for i in idx], [f"heldout:{i}" for i in idx])


def generator(seed: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator for image ``index``'s draws of one kind (``stream``), independent of the batch and of other
    streams: seeded from ``numpy.random.SeedSequence([seed, index, stream])``."""
    state = int(np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(state >> 1)


class Judge:
    """The network that reads a maximised image's class: never the classifier being maximised."""

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor], source: str, description: str):
        self.logits, self.source, self.description = logits, source, description

    @torch.no_grad()
    def probs(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        return torch.cat([torch.softmax(self.logits(x[i:i + batch]).float(), -1) for i in range(0, len(x), batch)])


def load_judge(spec: dict, device: str) -> Judge | None:
    """``spec`` from the resolver: the preset's digits network, a file (digits network or TorchScript), or none."""
    from model_core.provenance import file_sha256

    kind = spec.get("kind")
    if kind in (None, "none"):
        return None
    path = spec["path"]
    if path.startswith("bundled:"):
        from model_core.presets import WEIGHTS_DIR

        path = str(WEIGHTS_DIR / path[len("bundled:"):])
    sha = file_sha256(path)
    if spec.get("sha256") and spec["sha256"] != sha:
        raise InputError(f"judge {path}: its sha256 is {sha}, not {spec['sha256']} as the settings say")
    blob = None
    with warnings.catch_warnings():  # torch warns when the file is a TorchScript archive, tried next
        warnings.simplefilter("ignore")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            blob = None
    if isinstance(blob, dict) and "config" in blob and "state_dict" in blob:
        from model_core.models.feature_net import load_feature_net

        net = load_feature_net(path).to(device)
        return Judge(net.logits, f"sha256:{sha}", spec.get("role") or "a digits feature network's class head")
    try:
        with warnings.catch_warnings():  # deprecated in favour of torch.export, still the common exchange format
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location=device).eval()
    except Exception as exc:
        raise InputError(f"judge {path}: neither a digits feature network nor a TorchScript module "
                         f"({type(exc).__name__})") from None
    return Judge(module, f"sha256:{sha}", "a TorchScript classifier of images in [-1, 1]")


def provenance(pipe, **extra: Any) -> dict[str, Any]:
    import PIL

    return {**pipe.provenance(), "pillow": PIL.__version__, "device": str(pipe.device),
            "torch_threads": torch.get_num_threads(), **extra}


def ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    """Counts units of work and reports them; ``tick(n)`` adds n."""
    state = {"done": 0}

    def tick(n: int = 1) -> None:
        state["done"] += n
        if progress is not None:
            progress(min(state["done"], total), total)

    return tick


def class_name(preset, label: int | None) -> str:
    return "?" if label is None else preset.class_names[label]
