"""The event stream wakes on a worker's job-change notification (worker.notify -> app.job_events),
through Redis or, without it, the data directory's Unix sockets; and still ends by polling when no
notification can arrive."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from conftest import make_settings, sqlite_api, wait_until
from worker import jobs, notify


def _post(client) -> str:
    r = client.post("/v1/generations", json={"preset": "tiny", "class_labels": [1], "guidance": "robust",
                                             "steps": "10", "seed": 1})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _follow(client, job_id: str, out: list) -> None:
    """Read the whole stream (TestClient hands it over when it ends) into ``out`` as (event, data)."""
    event = None
    with client.stream("GET", f"/v1/generations/{job_id}/events") as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((event, json.loads(line[len("data: "):])))


def _act_as_worker(client, job_id: str) -> None:
    """What worker.runner does around sampling: claim, one progress write, complete; each followed
    by its notification."""
    settings = client.settings
    with client.app.state.sessions() as s:
        assert jobs.claim(s, job_id, "test-worker", 60, 3) is not None
    notify.job_changed(settings, [job_id])
    with client.app.state.sessions() as s:
        jobs.record_progress(s, [job_id], "test-worker", 5, 10)
    notify.job_changed(settings, [job_id])
    with client.app.state.sessions() as s:
        assert jobs.complete(s, job_id, [])
    notify.job_changed(settings, [job_id])


def _assert_woken_by_notifications(client) -> None:
    # Polling alone would see the finished job only after 60 s: only a notification can end it sooner.
    client.app.state.sse_poll_seconds = client.app.state.sse_safety_poll_seconds = 60.0
    job_id = _post(client)
    events: list = []
    reader = threading.Thread(target=_follow, args=(client, job_id, events), daemon=True)
    reader.start()
    subscriber = client.app.state.job_events
    wait_until(lambda: subscriber.connected.is_set() and subscriber.watching() == 1, timeout=10,
               what="the stream to subscribe")
    time.sleep(0.3)  # the stream's first read is done and it waits
    _act_as_worker(client, job_id)
    reader.join(timeout=20)
    assert not reader.is_alive(), "the stream did not wake on the worker's notifications"
    assert [e for e, _ in events][-1] == "done" and events[-1][1]["status"] == "succeeded"
    steps = [d["progress_step"] for e, d in events if e == "progress"]
    assert steps == sorted(steps) and steps[-1] == 10
    assert subscriber.watching() == 0  # the ended stream left nothing registered


def test_a_redis_notification_wakes_the_stream_long_before_its_poll(tmp_path, redis_url):
    with sqlite_api(tmp_path, redis_url=redis_url) as client:
        _assert_woken_by_notifications(client)


def test_without_redis_a_socket_notification_wakes_the_stream(short_tmp):
    with sqlite_api(short_tmp) as client:
        assert notify.publisher(client.settings).enabled
        _assert_woken_by_notifications(client)
        socket_path = client.app.state.job_events.path
        assert socket_path.parent == notify.socket_dir(client.settings) and socket_path.exists()
    assert not socket_path.exists()  # the API's shutdown removed its socket


def test_a_dead_api_processs_socket_is_removed_by_the_next_publish(short_tmp):
    import socket

    settings = make_settings(short_tmp)
    folder = notify.socket_dir(settings)
    folder.mkdir(parents=True)
    stale = folder / f"api-1-dead{notify.SOCKET_SUFFIX}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody reads it: as after a SIGKILL
    notify.job_changed(settings, ["some-job"])
    assert not stale.exists()


def test_a_path_too_long_for_a_socket_leaves_streams_polling(tmp_path):
    from app.job_events import for_settings

    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with sqlite_api(deep) as client:
        assert client.app.state.job_events is None and for_settings(client.settings) is None
        client.app.state.sse_poll_seconds = 0.05
        job_id = _post(client)
        events: list = []
        reader = threading.Thread(target=_follow, args=(client, job_id, events), daemon=True)
        reader.start()
        _act_as_worker(client, job_id)  # its notifications reach nobody
        reader.join(timeout=20)
        assert not reader.is_alive() and events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"


def test_an_unreachable_redis_costs_the_poll_interval_not_the_stream(tmp_path):
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with sqlite_api(tmp_path, redis_url=dead) as client:
        client.app.state.sse_poll_seconds = 0.05
        job_id = _post(client)
        events: list = []
        reader = threading.Thread(target=_follow, args=(client, job_id, events), daemon=True)
        reader.start()
        _act_as_worker(client, job_id)  # publishing fails and is swallowed
        assert notify.publisher(client.settings)._quiet_until > time.monotonic()  # and then stays quiet a while
        reader.join(timeout=20)
        assert not reader.is_alive() and events[-1][1]["status"] == "succeeded"
        assert not client.app.state.job_events.connected.is_set()
        assert client.app.state.job_events.watching() == 0


def test_publish_reaches_a_subscriber_on_the_service_channel_only(redis_url):
    import redis

    settings = make_settings(Path("/nonexistent"), redis_url=redis_url)
    other = make_settings(Path("/nonexistent"), redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(notify.channel(settings.queue))
    try:
        wait_until(lambda: pubsub.get_message(timeout=0.1) is None and client.pubsub_numsub(
            notify.channel(settings.queue))[0][1] == 1, timeout=5, what="the subscription")
        notify.job_changed(other, ["not-for-us"])
        notify.job_changed(settings, ["a", "b"])
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            m = pubsub.get_message(timeout=0.5)
            if m:
                got.append(m["data"].decode())
        assert got == ["a", "b"]
    finally:
        pubsub.close()
        client.close()


@pytest.fixture
def short_tmp():
    """A data directory whose socket paths fit a Unix socket address (pytest's tmp_path may not)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_publishers():
    # Publishers are cached per process; a test's dead-Redis one must not stay quiet for the next test.
    notify._publisher.cache_clear()
    yield
    notify._publisher.cache_clear()
