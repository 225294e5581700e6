"""The worker process's own variables are read in worker.config, as `rguide worker` sets them."""
import pytest

from worker.config import SettingsError, WorkerProcess


def test_worker_process_settings_from_the_variables_rguide_worker_sets():
    env = {"RGUIDE_WORKER_PRELOAD": "demo, tiny,", "RGUIDE_TORCH_THREADS": "2", "RGUIDE_WORKER_POOL": "prefork"}
    wp = WorkerProcess.from_env(env)
    assert wp == WorkerProcess(preload=("demo", "tiny"), torch_threads=2, pool="prefork")
    assert wp.describe() == {"preload": "demo,tiny", "pool": "prefork"}
    assert WorkerProcess.from_env({}) == WorkerProcess(preload=(), torch_threads=None, pool="solo")
    with pytest.raises(SettingsError, match="RGUIDE_TORCH_THREADS"):
        WorkerProcess.from_env({"RGUIDE_TORCH_THREADS": "many"})


def test_tasks_read_them_when_called(monkeypatch):
    import worker.tasks as tasks

    monkeypatch.setenv("RGUIDE_WORKER_PRELOAD", "")
    assert tasks.preload() == []
    loaded = []
    monkeypatch.setenv("RGUIDE_WORKER_PRELOAD", "tiny")
    monkeypatch.setattr("model_core.pipeline.get_pipeline", lambda name: loaded.append(name))
    assert tasks.preload() == ["tiny"] and loaded == ["tiny"]
