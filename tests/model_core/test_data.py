"""Datasets: MNIST's fixed split, .npz and image folders, scaling, fingerprints, batches, augmentation."""
import numpy as np
import pytest
import torch
from PIL import Image

from model_core.data import (DatasetError, augment, batch_indices, fingerprint, load_dataset, load_image_folder,
                             load_mnist, load_npz, stratified_split)


def test_mnist_split_is_fixed_stratified_and_disjoint():
    train, test = load_mnist("train"), load_mnist("test")
    assert len(train) == 4500 and len(test) == 500
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.float32
    assert torch.bincount(test.labels).tolist() == [50] * 10
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    # Disjoint: no held-out digit appears in the training split.
    tr = {bytes(x.numpy().tobytes()) for x in train.images}
    assert not any(bytes(x.numpy().tobytes()) in tr for x in test.images)
    # Recorded in checkpoints, and stable: changing it would silently change every accuracy in the model card.
    assert test.split == {"split": "test", "holdout": 0.1, "split_seed": 0, "size": 500}
    assert load_mnist("test").fingerprint == test.fingerprint


def test_mnist_split_cannot_be_changed():
    with pytest.raises(DatasetError, match="fixed"):
        load_dataset("mnist", holdout=0.2)


def test_stratified_split_is_seeded():
    labels = np.repeat(np.arange(3), 10)
    a = stratified_split(labels, 0.2, seed=5)
    b = stratified_split(labels, 0.2, seed=5)
    c = stratified_split(labels, 0.2, seed=6)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])
    assert np.bincount(labels[a[1]]).tolist() == [2, 2, 2]
    assert sorted(np.concatenate(a).tolist()) == list(range(30))


def test_npz_layouts_and_value_ranges(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    u8[0, 0, 0, 0], u8[0, 0, 0, 1] = 0, 255
    labels = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "nhwc.npz", images=u8, labels=labels)
    np.savez(tmp_path / "nchw01.npz", images=np.transpose(u8, (0, 3, 1, 2)) / 255.0, labels=labels)
    a = load_npz(tmp_path / "nhwc.npz")
    b = load_npz(tmp_path / "nchw01.npz")
    assert a.images.shape == (6, 3, 8, 8)
    assert torch.allclose(a.images, b.images, atol=1e-6)
    assert a.images.min() == -1 and a.images.max() == 1
    assert a.class_names == ("0", "1", "2")
    np.savez(tmp_path / "gray.npz", images=u8[..., 0], labels=labels, class_names=np.array(["a", "b", "c"]))
    g = load_npz(tmp_path / "gray.npz")
    assert g.images.shape == (6, 1, 8, 8) and g.class_names == ("a", "b", "c")


@pytest.mark.parametrize("images,labels,kw,msg", [
    (np.zeros((4, 8, 8)), np.array([0, 1, 0, 1, 1]), {}, "4 images but 5 labels"),
    (np.zeros((4, 8, 8)), np.array([0.0, 1, 0, 1]), {}, "integer"),
    (np.full((4, 8, 8), 300.0), np.array([0, 1, 0, 1]), {}, "outside the range 0-255"),
    (np.full((4, 8, 8), 0.5), np.array([0, 1, 0, 1]), {"value_range": "-1-1"}, None),
    (np.full((4, 8, 8), 2.0), np.array([0, 1, 0, 1]), {"value_range": "0-1"}, "outside the range 0-1"),
    (np.zeros((4, 5, 8, 8)), np.array([0, 1, 0, 1]), {}, "channel axis"),
    (np.zeros((4, 8, 6)), np.array([0, 1, 0, 1]), {}, "square"),
    (np.full((4, 8, 8), np.nan), np.array([0, 1, 0, 1]), {}, "NaN"),
])
def test_bad_npz_names_the_problem(tmp_path, images, labels, kw, msg):
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    if msg is None:
        assert load_npz(tmp_path / "d.npz", **kw).images.max() == 0.5
        return
    with pytest.raises(DatasetError, match=msg):
        load_npz(tmp_path / "d.npz", **kw)


def test_npz_missing_key_lists_what_is_there(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4)), y=np.zeros(2, dtype=int))
    with pytest.raises(DatasetError, match="has no array 'images'.*x, y"):
        load_npz(tmp_path / "d.npz")


def test_image_folder(tmp_path):
    for name, value in (("cat", 10), ("dog", 200)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (12, 10), (value, value, value)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored: not a folder")
    ds = load_image_folder(tmp_path, image_size=8, channels=1)
    assert ds.class_names == ("cat", "dog")
    assert ds.images.shape == (6, 1, 8, 8)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(ds.images[0], torch.full((1, 8, 8), 10 / 127.5 - 1), atol=1e-6)
    held = load_dataset(str(tmp_path), split="test", holdout=0.34, image_size=8, channels=1)
    assert torch.bincount(held.labels).tolist() == [1, 1]
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        load_image_folder(tmp_path, image_size=8)
    (tmp_path / "dog" / "broken.png").unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: class folder has no images"):
        load_image_folder(tmp_path, image_size=8)


def test_unknown_data_spec():
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset("/no/such/place")


def test_fingerprint_sees_every_pixel_and_label():
    x = torch.zeros(3, 1, 4, 4)
    y = torch.tensor([0, 1, 2])
    base = fingerprint(x, y)
    x2 = x.clone()
    x2[2, 0, 3, 3] = 1e-3
    assert fingerprint(x2, y) != base
    assert fingerprint(x, torch.tensor([0, 2, 1])) != base
    assert fingerprint(x.clone(), y.clone()) == base


def test_batches_are_a_pure_function_of_seed_and_step():
    n, b = 10, 4
    seq = np.concatenate([batch_indices(n, b, 3, s) for s in range(5)])
    # Each epoch of 10 is a permutation of 0..9; a batch may straddle epochs.
    assert sorted(seq[:10].tolist()) == list(range(10))
    assert sorted(seq[10:20].tolist()) == list(range(10))
    assert np.array_equal(batch_indices(n, b, 3, 4), seq[16:20])
    assert not np.array_equal(np.concatenate([batch_indices(n, b, 4, s) for s in range(5)]), seq)


def test_augment_translates_without_flipping_by_default():
    x = torch.full((5, 1, 6, 6), -1.0)
    x[:, :, 2:4, 2:4] = 1.0
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, crop_pad=2)
    assert out.shape == x.shape
    assert (out.sum(dim=(1, 2, 3)) == x.sum(dim=(1, 2, 3))).all()  # the square moves but stays whole
    assert not torch.equal(out, x)
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), crop_pad=2), out)
    assert augment(x, g) is x
    flipped = augment(x[:, :, :, :3].contiguous(), torch.Generator().manual_seed(1), hflip=True)
    assert flipped.shape == (5, 1, 6, 3)
