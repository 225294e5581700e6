"""Precision/recall on hand-checkable point sets, FID against the closed form, feature networks."""
import numpy as np
import pytest
import torch

from model_core.models.inception import InceptionV3Features, InceptionWeightsError, load_inception
from model_core.evaluation.metrics import as_model_images, extract_features, fid, knn_radii, manifold_coverage, precision_recall
from model_core.models.feature_net import DigitFeatureNet, as_stored, load_feature_net, save_feature_net


def pts(*xy):
    return torch.tensor(xy, dtype=torch.float64)


def test_knn_radius_is_the_kth_other_point():
    # On a line at 0, 1, 3, 7: neighbours of 0 are at 1, 3, 7.
    x = pts([0.0], [1.0], [3.0], [7.0])
    assert knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, k=3).tolist() == [7.0, 6.0, 4.0, 7.0]
    with pytest.raises(ValueError, match="more than 4"):
        knn_radii(x, k=4)


def test_precision_and_recall_by_hand():
    # Real: four corners of the unit square; with k=1 every real ball has radius 1.
    real = pts([0, 0], [1, 0], [0, 1], [1, 1])
    # Fake: two near the square (inside some ball), two far away.
    fake = pts([0.5, 0.5], [1.2, 1.0], [5, 5], [6, 5])
    # Precision: 2 of the 4 fakes lie within distance 1 of some corner.
    radii = knn_radii(real, k=1)
    assert radii.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert manifold_coverage(real, radii, fake).tolist() == [True, True, False, False]
    # Recall: fake radii (k=1): 0.5->1.2 is ~0.86, 1.2->0.5 ~0.86, 5->6 is 1, 6->5 is 1.
    # Real points within 0.86 of (0.5,0.5): all four corners are 0.707 away -> recall 1.
    p, r = precision_recall(real, fake, k=1)
    assert p == 0.5 and r == 1.0
    # Moving the near fakes away: nothing covers the corners any more.
    p, r = precision_recall(real, pts([5, 5], [6, 5], [5, 6], [6, 6]), k=1)
    assert (p, r) == (0.0, 0.0)


def test_precision_recall_of_identical_sets_is_one():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)


def test_mode_collapse_keeps_precision_and_loses_recall():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 2, generator=g)
    collapsed = 0.1 * torch.randn(400, 2, generator=g)  # all samples near the mode
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.95 and r < 0.3


def test_fid_matches_the_closed_form_for_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64) * 2.0 + torch.tensor([1.0, 0.0, 0.0])
    # Closed form for N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2*2I) = 1 + 3 = 4.
    assert fid(a, b) == pytest.approx(4.0, abs=0.25)
    assert fid(a, a.clone()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="two"):
        fid(a[:1], b)


def test_uint8_hwc_images_become_model_images():
    img = np.zeros((2, 4, 4, 1), dtype=np.uint8)
    img[1] = 255
    x = as_model_images(img)
    assert x.shape == (2, 1, 4, 4) and x[0].max() == -1 and x[1].min() == 1


def test_digit_feature_net_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = DigitFeatureNet(width=4, num_features=8)
    save_feature_net(net, tmp_path / "f.pt", {"test_accuracy": 0.5})
    back = load_feature_net(tmp_path / "f.pt")
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.equal(extract_features(back, x), extract_features(net, x))
    assert extract_features(back, x).shape == (3, 8)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_feature_net(tmp_path / "nope.pt")


def test_feature_net_stored_in_half_precision_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    net = DigitFeatureNet(width=4, num_features=8)
    from model_core.provenance import environment

    save_feature_net(net, tmp_path / "half.pt", {**environment()}, torch.float16)  # loads with weights_only
    save_feature_net(net, tmp_path / "full.pt", {})
    assert (tmp_path / "half.pt").stat().st_size < (tmp_path / "full.pt").stat().st_size
    back = load_feature_net(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in back.parameters())
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    ref = extract_features(net, x)
    assert torch.allclose(extract_features(back, x), ref, atol=1e-2 * float(ref.abs().max()))
    assert torch.equal(extract_features(as_stored(net, torch.float16), x), extract_features(back, x))


def test_inception_needs_a_user_given_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RGUIDE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(InceptionWeightsError, match="nothing is downloaded"):
        load_inception(None)
    with pytest.raises(InceptionWeightsError, match="missing.pth"):
        load_inception(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not an Inception-V3 checkpoint"):
        load_inception(tmp_path / "wrong.pth")


@pytest.mark.slow
def test_inception_loads_torchvision_style_keys_and_ignores_heads(tmp_path, monkeypatch):
    torch.manual_seed(0)
    src = InceptionV3Features()
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(1008, 2048)  # the FID port's 1008-way head: ignored
    state["fc.bias"] = torch.zeros(1008)
    torch.save(state, tmp_path / "pt_inception.pth")
    monkeypatch.setenv("RGUIDE_INCEPTION_WEIGHTS", str(tmp_path / "pt_inception.pth"))
    net = load_inception()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    feats = extract_features(net, x)
    assert feats.shape == (2, 2048)
    assert torch.allclose(feats, extract_features(src, x))
