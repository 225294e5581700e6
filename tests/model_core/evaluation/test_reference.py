"""Real-image reference statistics: computed once per network and real set, stored with ADM's keys, reused;
the evaluation plan's shards and feature blocks."""
import numpy as np
import pytest
import torch

from model_core.errors import SettingError
from model_core.evaluation import reference
from model_core.evaluation.plan import EvalSettings, plan, shards
from model_core.models.feature_net import DigitFeatureNet, save_feature_net


@pytest.fixture()
def assets(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "real.npz", images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(24) % 4)
    torch.manual_seed(0)
    save_feature_net(DigitFeatureNet(in_channels=3, num_classes=4, image_size=16, width=8, num_features=16),
                     tmp_path / "feat.pt", {})
    return tmp_path


def test_a_reference_is_computed_once_and_reused(assets, monkeypatch):
    from model_core.evaluation.metrics import load_extractor

    net = load_extractor("digits", str(assets / "feat.pt"))
    calls = []
    compute = reference.compute_reference
    monkeypatch.setattr(reference, "compute_reference", lambda *a: calls.append(1) or compute(*a))
    store = assets / "store"
    first = reference.reference_for("digits", str(assets / "feat.pt"), net, str(assets / "real.npz"), "all",
                                    cache_dir=store)
    again = reference.reference_for("digits", str(assets / "feat.pt"), net, str(assets / "real.npz"), "all",
                                    cache_dir=store)
    assert len(calls) == 1 and again.path == first.path
    assert torch.equal(first.features, again.features) and first.features.shape == (24, 16)
    with np.load(first.path) as f:
        assert {"mu", "sigma", "features"} <= set(f.files)
        np.testing.assert_allclose(f["mu"], f["features"].astype(np.float64).mean(0))
        np.testing.assert_allclose(f["sigma"], np.cov(f["features"].astype(np.float64), rowvar=False))
    assert first.info["real"]["num_images"] == 24 and first.info["weights_sha256"]
    # Other weights: another reference.
    torch.manual_seed(1)
    save_feature_net(DigitFeatureNet(in_channels=3, num_classes=4, image_size=16, width=8, num_features=16),
                     assets / "feat2.pt", {})
    other = reference.reference_for("digits", str(assets / "feat2.pt"), load_extractor("digits", str(assets / "feat2.pt")),
                                    str(assets / "real.npz"), "all", cache_dir=store)
    assert other.path != first.path and len(calls) == 2


def test_shards_cover_every_row_in_whole_feature_blocks_with_the_plan_seeds():
    p = plan(EvalSettings(preset="tiny", methods=["none", "robust"], scales=[1.0, 2.0], per_class=3, steps="3",
                          seed=5, features="digits", feature_weights="x.pt", real_data="x.npz", feature_batch=4))
    assert len(p.rows) == 3 and p.n == 3 * 4  # tiny has 4 classes
    cut = shards(p, 8)
    assert [(s.row, s.start, s.stop) for s in cut] == [(r, a, min(a + 8, 12)) for r in range(3) for a in (0, 8)]
    assert p.seeds(p.rows[2], 8, 12) == [13, 14, 15, 16]  # image i: seed + i, whatever the shard
    with pytest.raises(SettingError) as err:
        shards(p, 6)
    assert err.value.settings[0] == "shard_size"


def test_the_plan_and_the_evaluations_api_import_without_torch():
    """The API resolves and cuts an evaluation at request time, and must not import torch to do it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, app.api.evaluations, app.evaluation_pages, worker.evaluation_runner; "
            "from model_core.evaluation.plan import EvalSettings, plan, shards; "
            "shards(plan(EvalSettings(preset='demo', methods=['none', 'robust'], scales=[1.0], per_class=2, "
            "steps='5')), 256); assert 'torch' not in sys.modules, 'torch imported'")
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
