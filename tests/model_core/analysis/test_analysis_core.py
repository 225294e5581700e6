"""model_core.analysis: gradient maps, class maximisation, trajectories, sheets, sidecars (tiny preset, CPU)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_core.analysis import compare, gradients, maximize, render, sidecar, trajectory
from model_core.analysis.common import Inputs, generator
from model_core.analysis.requests import resolve_analysis
from model_core.diffusion import create_diffusion
from model_core.images import encode_png, to_uint8
from model_core.pipeline import get_pipeline
from model_core.sampling.loop import Trajectory
from model_core.training.recipes import classifier_process


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)  # the test machine's cores are shared; more threads only contend
    return get_pipeline("tiny", "cpu")


def random_pngs(n: int, seed: int = 0, size: int = 16, channels: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_png(rng.integers(0, 256, (size, size, channels), dtype=np.uint8)) for _ in range(n)]


def uploads(n: int, labels=None, **extra) -> list[dict]:
    labels = labels or [i % 4 for i in range(n)]
    return [{"png": png, "label": y, **extra} for png, y in zip(random_pngs(n), labels)]


def finder(resolved):
    by_sha = {u.sha256: u.png for u in resolved.uploads}
    return lambda sha: by_sha[sha]


# -- gradients ---------------------------------------------------------------------------------

def test_a_gradient_map_equals_the_autograd_gradient_computed_directly(pipe):
    resolved = resolve_analysis("gradients", {"images": uploads(3), "timesteps": [0, 250, 900], "seed": 7},
                                preset="tiny")
    x0 = torch.stack([torch.from_numpy(np.moveaxis(u.pixels, -1, 0).astype(np.float32) / 127.5 - 1.0)
                      for u in resolved.uploads])
    y = torch.tensor([u.label for u in resolved.uploads])
    diffusion = create_diffusion(classifier_process(pipe.preset))
    maps = gradients.gradient_maps(pipe.classifiers, diffusion, x0, y, [0, 250, 900], seed=7)
    abar = diffusion.alphas_cumprod  # float64, as the process keeps it
    for i in range(3):
        g = generator(7, i, gradients.GRID_STREAM)  # the documented noise rule, drawn here independently
        for k, t in enumerate([0, 250, 900]):
            eps = torch.randn(x0.shape[1:], generator=g)
            x_t = float(np.sqrt(abar[t])) * x0[i] + float(np.sqrt(1 - abar[t])) * eps
            assert torch.allclose(maps.x_t[i, k], x_t, atol=1e-6)
            for name, model in pipe.classifiers.items():
                x_in = x_t[None].clone().requires_grad_(True)
                logp = F.log_softmax(model(x_in, torch.tensor([t])), -1)[0, y[i]]
                (direct,) = torch.autograd.grad(logp, x_in)
                assert torch.allclose(maps.grads[name][i, k], direct[0], rtol=1e-4, atol=1e-7), (name, i, t)
    # The picture shows each map min-max normalised: its darkest pixel 0, its brightest 255.
    cell = render.unit_to_uint8(render.minmax(maps.grads["robust"][0, 1].numpy()))
    assert cell.min() == 0 and cell.max() == 255


class Recorder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x, t):
        self.seen.append((x.detach().clone(), t.detach().clone()))
        return self.inner(x, t)


def test_every_classifier_sees_the_same_noisy_inputs(pipe):
    resolved = resolve_analysis("gradients", {"images": uploads(5), "seed": 3, "buckets": 3}, preset="tiny")
    recorders = {name: Recorder(m) for name, m in pipe.classifiers.items()}
    diffusion = create_diffusion(classifier_process(pipe.preset))
    inputs = Inputs(torch.stack([torch.from_numpy(np.moveaxis(u.pixels, -1, 0).astype(np.float32) / 127.5 - 1)
                                 for u in resolved.uploads]), [u.label for u in resolved.uploads], ["x"] * 5)
    gradients.gradient_maps(recorders, diffusion, inputs.x0, torch.tensor(inputs.labels), [10, 600], seed=3)
    gradients.bucket_alignment(recorders, diffusion, inputs, 3, 0.0, 3, "cpu", lambda n=1: None)
    vanilla, robust = recorders["vanilla"].seen, recorders["robust"].seen
    assert len(vanilla) == len(robust) == 2 + 3
    for (xv, tv), (xr, tr) in zip(vanilla, robust):
        assert torch.equal(xv, xr) and torch.equal(tv, tr)
    # ... and the noise differs between timesteps and images (it is noise, not a constant).
    assert not torch.equal(vanilla[0][0], vanilla[1][0])


def test_alignment_numbers_on_hand_made_gradients():
    x0 = -torch.ones(2, 1, 4, 4)
    x0[:, :, 1:3, 1:3] = 1.0                      # a 2x2 object: a quarter of the pixels
    x_t = torch.zeros_like(x0)
    toward = x0 - x_t                             # exactly the direction back to the clean image
    on_object = (x0 > 0).float() * 3.0
    a = gradients.alignment(torch.cat([toward[:1], on_object[1:]]), x0, x_t, threshold=0.0)
    assert a["cosine"][0].item() == pytest.approx(1.0)
    assert a["object_share"][1].item() == pytest.approx(1.0)
    assert a["object_share"][0].item() == pytest.approx(0.25)  # energy spread evenly -> the area share
    assert a["object_area"].tolist() == pytest.approx([0.25, 0.25])
    zero = gradients.alignment(torch.zeros_like(x0), x0, x_t, 0.0)
    assert torch.isnan(zero["cosine"]).all()  # no direction: left out of averages, not counted as 0


def test_gradients_run_writes_a_picture_a_table_and_intervals(pipe, tmp_path):
    resolved = resolve_analysis("gradients", {"images": uploads(4), "show": 2, "timesteps": [0, 500]},
                                preset="tiny")
    out = gradients.run(resolved.settings, find_upload=finder(resolved), device="cpu")
    assert set(out.files) == {"gradients.png", "gradients.md"}
    entry = out.summary["buckets"]["0-249"]
    assert entry["n"] == 4
    cos = entry["classifiers"]["robust"]["cosine"]
    assert cos["low"] <= cos["mean"] <= cos["high"]
    assert "robust - vanilla" in entry["differences"]


# -- class maximisation ---------------------------------------------------------------------------

def test_targeted_pgd_stays_inside_its_ball_and_raises_the_target_probability(pipe):
    x = torch.from_numpy(np.stack([np.moveaxis(np.frombuffer(bytes(range(256)) * 3, np.uint8).reshape(16, 16, 3),
                                               -1, 0)] * 4).astype(np.float32) / 127.5 - 1.0)
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x = x.clamp(-1, 1)
    targets = torch.tensor([0, 1, 2, 3])
    model = pipe.classifiers["robust"]
    eps = 2.0
    res = maximize.maximise(model, x, targets, eps=eps, steps=7, step_size=2.5 * eps / 7)
    delta = (res.x_adv - x).flatten(1).norm(dim=1)
    assert (delta <= eps * (1 + 1e-5)).all(), delta
    assert res.x_adv.min() >= -1 and res.x_adv.max() <= 1
    before = maximize.target_probs(model, x, targets)
    after = maximize.target_probs(model, res.x_adv, targets)
    assert (after > before).all(), (before, after)


def test_random_targets_are_never_the_true_class_and_depend_only_on_seed_and_index():
    labels = [i % 10 for i in range(200)]
    t = maximize.random_targets(labels, 10, seed=4)
    assert all(a != b for a, b in zip(t, labels))
    assert len(set(t)) == 10
    assert maximize.random_targets(labels[:5], 10, seed=4) == t[:5]


def test_the_judge_reads_the_results_and_rates_come_with_intervals(pipe, tmp_path):
    # A TorchScript judge file, as a user would give for a preset without a bundled one.
    path = tmp_path / "judge.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, but still loads
        warnings.simplefilter("ignore", DeprecationWarning)
        judge = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16 * 3, 4)))
        torch.jit.save(judge, str(path))
    resolved = resolve_analysis("maximize", {"images": uploads(4), "targets": [1, 2, 3, 0], "eps": 3.0,
                                             "judge": str(path)}, preset="tiny", allow_paths=True)
    assert resolved.settings["step_size"] == pytest.approx(2.5 * 3.0 / 7)
    out = maximize.run(resolved.settings, find_upload=finder(resolved), device="cpu")
    rate = out.summary["classifiers"]["vanilla"]["judge_reads_target"]
    assert rate["n"] == 4 and 0 <= rate["low"] <= rate["rate"] <= rate["high"] <= 1
    assert out.provenance["judge"].startswith("sha256:")


# -- trajectories and sheets --------------------------------------------------------------------------

def test_frame_steps_are_uniform_and_end_on_the_last_step():
    assert trajectory.frame_steps(100, 8) == [0, 14, 28, 42, 57, 71, 85, 99]
    assert trajectory.frame_steps(10, 1) == [9]
    assert trajectory.frame_steps(3, 8) == [0, 1, 2]


@pytest.mark.parametrize("sampler,steps", [("ddpm", "8"), ("ddim", "ddim8")])
def test_the_last_trajectory_frame_equals_the_final_image(pipe, sampler, steps, monkeypatch):
    trs = [Trajectory(1, 5, "robust", 3.0), Trajectory(2, 6, "vanilla", 2.0), Trajectory(3, 7, "none", 0.0)]
    want = pipe.sample_trajectories(trs, steps, sampler)
    at = trajectory.frame_steps(8, 4)
    monkeypatch.setattr(pipe, "max_batch", 2)  # two chunks: each frame must land on its own row
    x0, frames = trajectory.sample_with_frames(pipe, trs, steps, sampler, at)
    assert torch.equal(frames[at[-1]], x0)
    assert not torch.equal(frames[at[0]], x0)
    # Chunked or not, each row is its own trajectory (batch invariance holds for the stored 8-bit pixels).
    assert np.array_equal(to_uint8(x0), to_uint8(want))
    monkeypatch.setattr(pipe, "max_batch", 64)
    _, whole = trajectory.sample_with_frames(pipe, trs, steps, sampler, at)
    for s in at:
        assert np.array_equal(to_uint8(frames[s]), to_uint8(whole[s]))


def test_trajectory_and_compare_sheets_on_the_same_seeds(pipe):
    r = resolve_analysis("trajectory", {"labels": [1, 2], "seed": 3, "steps": "6", "frames": 3}, preset="tiny")
    out = trajectory.run(r.settings, device="cpu")
    assert out.summary["frame_steps"] == [0, 2, 5]
    c = resolve_analysis("compare", {"labels": [1, 2], "seed": 3, "steps": "6"}, preset="tiny")
    sheet = compare.run(c.settings, device="cpu")
    # The trajectory's final frames are the sheet's images: same label, seed, arm and steps.
    finals = {(s["arm"], s["label"], s["seed"]): s["final_sha256"] for s in out.summary["samples"]}
    for s in sheet.summary["samples"]:
        assert finals[(s["arm"], s["label"], s["seed"])] == s["sha256"]


# -- sidecars -----------------------------------------------------------------------------------------

CASES = {
    "gradients": ({"images": uploads(3), "timesteps": [5, 400], "buckets": 2}, {}),
    "maximize": ({"images": uploads(3), "judge": "none", "eps": 2.0}, {}),
    "trajectory": ({"labels": [0, 3], "seed": 11, "steps": "5", "frames": 3}, {}),
    "compare": ({"labels": [2], "seeds": [40], "steps": "ddim5", "arms": ["none", "robust=2"]}, {}),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_output_is_reproduced_bit_for_bit_from_its_sidecar(pipe, kind, tmp_path):
    fields, _ = CASES[kind]
    resolved = resolve_analysis(kind, fields, preset="tiny")
    out = sidecar.run(kind, resolved.settings, find_upload=finder(resolved) if resolved.uploads else None,
                      device="cpu")
    path = sidecar.write(out, tmp_path / "first", {u.sha256: u.png for u in resolved.uploads})
    again, verdict = sidecar.reproduce(path)
    assert verdict.identical, verdict.differences
    for name, data in out.files.items():
        assert again.files[name] == data == (tmp_path / "first" / name).read_bytes()
    # A changed input image is caught, not silently used.
    if resolved.uploads:
        victim = next((tmp_path / "first" / "inputs").iterdir())
        victim.write_bytes(random_pngs(1, seed=99)[0])
        with pytest.raises(Exception, match="sha256"):
            sidecar.reproduce(path)


def test_a_changed_setting_is_reported_as_a_difference(pipe, tmp_path):
    resolved = resolve_analysis("compare", {"labels": [1], "seed": 2, "steps": "4"}, preset="tiny")
    out = compare.run(resolved.settings, device="cpu")
    path = sidecar.write(out, tmp_path)
    doc = sidecar.read(path)
    doc["settings"]["seeds"] = [3]
    path.write_text(__import__("json").dumps(doc))
    _, verdict = sidecar.reproduce(path)
    assert not verdict.identical and any("compare.png" in d for d in verdict.differences)


@pytest.mark.slow
def test_a_sweep_plots_the_table_and_reproduces_from_its_sidecar(tmp_path):
    # The demo preset (the tiny one has no evaluation network): one image per class, 3 steps.
    resolved = resolve_analysis("sweep", {"methods": ["none", "robust"], "scales": [1.0, 4.0], "per_class": 1,
                                          "steps": "3"}, preset="demo")
    seen = []
    out = sidecar.run("sweep", resolved.settings, device="cpu", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 3 * 3  # 3 rows x 3 steps
    rows = {(r["method"], r["scale"]): r for r in out.summary["rows"]}
    assert set(rows) == {("none", 0.0), ("robust", 1.0), ("robust", 4.0)}
    assert all({"fid", "precision", "recall", "label_accuracy"} <= set(r) for r in rows.values())
    table = out.files["sweep.md"].decode()
    assert "| robust | precision |" in table and "s=4" in table  # the paper's Table 6 layout
    assert out.files["sweep.png"].startswith(b"\x89PNG")
    path = sidecar.write(out, tmp_path)
    again, verdict = sidecar.reproduce(path)
    assert verdict.identical, verdict.differences
