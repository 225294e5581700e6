"""``torchrun --nproc-per-node 2`` on CPU (gloo): two ranks train what one process trains with the same global
batch (vanilla and robust classifiers, a diffusion model), only rank 0 writes, and a run resumes exactly on
one rank or two from a checkpoint of either."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddp_configs import STEPS, clf_cfg, data, diff_cfg
from test_training import TINY_CLASSIFIER
from model_core.training.classifier import train_classifier
from model_core.training.diffusion import train_diffusion

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

pytestmark = pytest.mark.slow
_OUTPUT: list[str] = []


def runs_output() -> str:
    return "".join(_OUTPUT)


def state(run: Path) -> dict:
    return torch.load(run / "state.pt", map_location="cpu", weights_only=True)


def assert_close_weights(a: dict, b: dict, lr: float) -> None:
    """Equal to float tolerance, as far as Adam lets that be seen.

    The ranks' gradients are the one process's summed in another order (relative differences ~1e-6). Adam
    divides each gradient by its running RMS, so where a gradient is zero in exact arithmetic (a conv bias
    before GroupNorm, attention's key bias) it turns that float noise into a step of up to lr; elsewhere the
    weights agree. So: almost every element within 1e-5, none further than lr / 2 (a wrong batch part or
    weighting moves most elements by about lr per step), and the same loss at every step (below).
    """
    worst, off, total = 0.0, 0, 0
    for key in a:
        d = (a[key].double() - b[key].double()).abs()
        worst, off, total = max(worst, float(d.max())), off + int((d > 1e-5).sum()), total + d.numel()
    assert worst < lr / 2, worst
    assert off / total < 1e-3, (off, total)


def assert_same_training(a: Path, b: Path, lr: float = 1e-3) -> None:
    sa, sb = state(a), state(b)
    assert sa["step"] == sb["step"] == STEPS
    assert_close_weights(sa["model"], sb["model"], lr)
    if sa["ema"] is not None:
        assert_close_weights(sa["ema"], sb["ema"], lr)
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(STEPS))  # one writer, no duplicates
    for ra, rb in zip(la, lb):
        assert ra["lr"] == rb["lr"]
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["buckets"].keys() == rb["buckets"].keys()
        assert [v["n"] for v in ra["buckets"].values()] == [v["n"] for v in rb["buckets"].values()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    one, two = base / "one", base / "two"
    ds = data()
    # A one-process checkpoint at step 2, for two ranks to resume.
    train_classifier(clf_cfg(), two / "from_one", dataset=ds, progress=False, stop_at=STEPS // 2)
    np.savez(two / "cli.npz", images=ds.images.numpy(), labels=ds.labels.numpy())
    (two / "cli.json").write_text(json.dumps(TINY_CLASSIFIER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(TORCHRUN + [str(HERE / "ddp_runs.py"), str(two)], cwd=HERE, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _OUTPUT.append(proc.stdout + proc.stderr)
    train_classifier(clf_cfg(), one / "vanilla", dataset=ds, progress=False)
    train_classifier(clf_cfg(robust=True), one / "robust", dataset=ds, progress=False)
    train_diffusion(diff_cfg(), one / "diffusion", dataset=ds, progress=False)
    # The two-rank checkpoint at step 2, run on to the end by one process.
    shutil.copytree(two / "half", one / "from_two")
    train_classifier(clf_cfg(), one / "from_two", dataset=ds, progress=False)
    return one, two


def test_the_training_command_runs_under_torchrun_and_rank_0_alone_writes(runs):
    _one, two = runs
    st = state(two / "cli")
    assert st["step"] == 2 and st["world_size"] == 2
    assert len((two / "cli" / "metrics.jsonl").read_text().splitlines()) == 2
    assert runs_output().count("vanilla classifier: finished 2 steps") == 1


@pytest.mark.parametrize("kind", ["vanilla", "robust", "diffusion"])
def test_two_ranks_reach_the_parameters_of_one_process(runs, kind):
    one, two = runs
    assert state(two / kind)["world_size"] == 2 and len(state(two / kind)["rng_ranks"]) == 2
    assert_same_training(one / kind, two / kind)
    if kind == "robust":  # the attack ran on each rank's part and the log holds the whole batch's statistics
        rec = json.loads((two / kind / "metrics.jsonl").read_text().splitlines()[0])
        assert {"adv_acc", "stopped_early", "attack_steps"} <= set(rec)


@pytest.mark.parametrize("resumed", ["one/from_two", "two/resumed", "two/from_one"])
def test_a_run_resumes_exactly_on_any_number_of_ranks(runs, resumed):
    one, two = runs
    where, name = resumed.split("/")
    run = (one if where == "one" else two) / name
    assert state(run)["resumed_at_steps"] == [STEPS // 2]
    assert_same_training(one / "vanilla", run)
