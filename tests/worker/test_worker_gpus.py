"""`rguide worker --gpus`: which devices, and one worker process per device pinned with CUDA_VISIBLE_DEVICES."""
from __future__ import annotations

import pytest

from rguide.cli import CLIError
from rguide.cmd_serve import _WorkerSupervisor, gpu_ids


@pytest.mark.parametrize("spec, visible, count, expected", [
    ("all", None, 2, ["0", "1"]),
    ("all", "", 3, ["0", "1", "2"]),
    ("all", "2,5", 8, ["2", "5"]),        # an inherited restriction is kept
    ("0,1", None, 0, ["0", "1"]),
    ("GPU-abc,1", None, 0, ["GPU-abc", "1"]),
])
def test_gpu_ids(spec, visible, count, expected):
    assert gpu_ids(spec, visible, count) == expected


@pytest.mark.parametrize("spec, visible, count", [("all", None, 0), ("all", "-1", 4), ("0,0", None, 2), ("x", None, 1),
                                                  ("", None, 1)])
def test_gpu_ids_refuses_what_names_no_device(spec, visible, count):
    with pytest.raises(CLIError):
        gpu_ids(spec, visible, count)


def test_one_worker_process_per_gpu_each_sees_only_its_device(monkeypatch, tmp_path):
    import rguide.cmd_serve as serve

    started = []

    class FakeProc:
        def __init__(self, cmd, env, preexec_fn=None):
            started.append((cmd, env))

        def poll(self):
            return None

    monkeypatch.setattr(serve.subprocess, "Popen", FakeProc)
    per_worker = [(f"w-gpu{g}@%h", {"CUDA_VISIBLE_DEVICES": g, "RGUIDE_DEVICE": "cuda"}, ["--concurrency", "1"])
                  for g in ("0", "1")]
    sup = _WorkerSupervisor(2, "demo", {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"}, 2, per_worker)
    for i in range(2):
        sup.procs[i] = sup._start(i)
    (cmd0, env0), (cmd1, env1) = started
    assert env0["CUDA_VISIBLE_DEVICES"] == "0" and env1["CUDA_VISIBLE_DEVICES"] == "1"
    assert env0["RGUIDE_DEVICE"] == env1["RGUIDE_DEVICE"] == "cuda"
    assert cmd0[cmd0.index("--name") + 1] == "w-gpu0@%h" and cmd1[cmd1.index("--name") + 1] == "w-gpu1@%h"
    assert cmd0[cmd0.index("--preload") + 1] == "demo" and "--gpus" not in cmd0


def test_rguide_worker_gpus_all_without_a_gpu_is_a_clear_error(monkeypatch, capsys):
    from rguide.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert main(["worker", "--gpus", "all"]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
