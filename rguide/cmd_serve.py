"""``rguide up`` (API + worker on one machine), ``rguide api``, ``rguide worker``, ``rguide keys``.

All of them read the same settings (``worker.config``): with nothing set,
SQLite, the filesystem broker and the media folder live under
``./rguide-data``; ``DATABASE_URL`` and ``REDIS_URL`` point them at
PostgreSQL and Redis for many machines. Every process brings the schema to
head (Alembic) on start, under a lock.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from rguide.cli import CLIError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _port_default() -> int:
    raw = os.environ.get("RGUIDE_PORT", "8000")
    try:
        return int(raw)
    except ValueError:
        raise CLIError(f"RGUIDE_PORT={raw!r} is not a port number") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where SQLite, the filesystem broker and the images live when DATABASE_URL / REDIS_URL "
                        "are not set (default: $RGUIDE_DATA_DIR, else ./rguide-data)")


def _http(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("RGUIDE_HOST", "127.0.0.1"),
                   help="address to listen on (default: $RGUIDE_HOST, else 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=None, help="port (default: $RGUIDE_PORT, else 8000)")


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="start the generation API and a worker on this machine",
                        description="Start the REST API and worker process(es) with embedded defaults (SQLite, "
                                    "a filesystem broker, images under the data directory), or with "
                                    "DATABASE_URL / REDIS_URL when set. Ctrl-C stops everything.")
    _http(up)
    _common(up)
    up.add_argument("--workers", type=int, default=1, help="worker processes to start (default 1)")
    up.add_argument("--preload", default=None,
                    help="presets each worker loads at start, comma-separated, or 'none' (default: the default preset)")
    up.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker (default: torch's choice)")
    up.set_defaults(func=run_up)

    api = sub.add_parser("api", help="start only the REST API (workers run elsewhere: rguide worker)")
    _http(api)
    _common(api)
    api.add_argument("--processes", type=int, default=1, help="uvicorn worker processes (default 1)")
    api.add_argument("--no-reaper", action="store_true",
                     help="do not re-send lost jobs from this process (another API process does it)")
    api.set_defaults(func=run_api)

    worker = sub.add_parser("worker", help="start a generation worker (Celery) on this machine",
                            description="Consume generation jobs. Start one per GPU; all share the database, "
                                        "the broker and the media directory.")
    _common(worker)
    worker.add_argument("--concurrency", type=int, default=1,
                        help="task processes (default 1: one process that runs tasks itself)")
    worker.add_argument("--preload", default=None,
                        help="presets to load at start, comma-separated, or 'none' (default: the default preset)")
    worker.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per task process (default: torch's choice)")
    worker.add_argument("--name", default=None, help="Celery node name (default: rguide-<pid>@<host>)")
    worker.add_argument("--gpus", default=None, metavar="all|IDS",
                        help="one worker process per GPU: 'all' (every visible CUDA device) or ids such as 0,1; "
                             "each sees only its GPU (CUDA_VISIBLE_DEVICES) and is restarted if it dies")
    worker.add_argument("--loglevel", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    worker.set_defaults(func=run_worker)

    keys = sub.add_parser("keys", help="researcher API keys: create, list, revoke, grant a study")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    create = ksub.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--admin", action="store_true",
                        help="the key sees and closes every lab's studies (others see only their own)")
    _common(create)
    create.set_defaults(func=run_keys_create)
    lst = ksub.add_parser("list", help="list keys (never their secret)")
    _common(lst)
    lst.set_defaults(func=run_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", help="key id or prefix (from rguide keys list)")
    _common(revoke)
    revoke.set_defaults(func=run_keys_revoke)
    for name, helptext in (("grant", "let a key see and close a study it did not create"),
                           ("ungrant", "take back a grant")):
        g = ksub.add_parser(name, help=helptext)
        g.add_argument("study", help="study id (from /v1/surveys or the researcher pages)")
        g.add_argument("key", help="key id or prefix (from rguide keys list)")
        _common(g)
        g.set_defaults(func=run_keys_grant, grant=name == "grant")


# -- shared ---------------------------------------------------------------------------

def _settings(args: argparse.Namespace):
    from worker.config import Settings, SettingsError

    if getattr(args, "data_dir", None) is not None:
        # Through the environment, so child processes (workers) see the same directory.
        os.environ["RGUIDE_DATA_DIR"] = str(args.data_dir.expanduser().resolve())
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise CLIError(str(exc)) from None


def _migrate(settings) -> None:
    from worker import db

    settings.ensure_dirs()
    try:
        db.upgrade(settings.database_url)
    except Exception as exc:
        raise CLIError(f"could not prepare the database {settings.describe()['database']}: "
                       f"{type(exc).__name__}: {exc}") from None


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise CLIError(f"--port {port}: use a port between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise CLIError(f"cannot listen on {host}:{port} ({exc.strerror}); is another server running? "
                           "Choose another with --port") from None


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


def _serve(app_or_path, host: str, port: int, settings, processes: int = 1) -> None:
    import uvicorn

    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise, so any local client
    # could pick its own address and slip past the per-address rate limit: trust only the
    # proxies the operator names (RGUIDE_TRUSTED_PROXIES).
    proxies = ",".join(settings.trusted_proxies)
    common = dict(host=host, port=port, log_level="info", proxy_headers=bool(proxies),
                  forwarded_allow_ips=proxies or "")
    if isinstance(app_or_path, str):
        uvicorn.run(app_or_path, factory=True, workers=processes, **common)
    else:
        uvicorn.run(app_or_path, **common)


def _exit_on_signal(signum, frame) -> None:
    # A Python-level handler (not the default action) so that ``finally`` blocks run: uvicorn
    # restores the handler it found and raises the signal again once it has shut down. A stop
    # that was asked for (Ctrl-C, a service manager's SIGTERM) is a clean exit: status 0.
    raise SystemExit(0)


def _die_with_parent() -> None:
    """In a child before exec: the kernel sends it SIGTERM when its parent dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: rguide up's own shutdown still stops its workers


# -- up ---------------------------------------------------------------------------------

class _WorkerSupervisor:
    """Runs worker processes for ``rguide up`` and restarts one that dies.

    A job the dead worker was running is not lost: its lease expires and
    the API's reaper sends it again.
    """

    def __init__(self, n: int, preload: str | None, env: dict[str, str], threads: int | None = None,
                 per_worker: list[tuple[str, dict[str, str], list[str]]] | None = None):
        self.n, self.preload, self.env, self.threads = n, preload, env, threads
        # (name, extra environment, extra arguments) of each worker; default: rguide up's.
        self.per_worker = per_worker or [(f"rguide-up-{i}-{os.getpid()}@%h", {}, []) for i in range(n)]
        self.procs: list[subprocess.Popen | None] = [None] * n
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rguide-supervisor", daemon=True)

    def _start(self, i: int) -> subprocess.Popen:
        name, env, extra = self.per_worker[i]
        cmd = [sys.executable, "-m", "rguide", "worker", "--name", name]
        cmd += ["--preload", self.preload or "none"]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return subprocess.Popen(cmd + extra, env={**self.env, **env},
                                preexec_fn=_die_with_parent if os.name == "posix" else None)

    def start(self) -> None:
        for i in range(self.n):
            self.procs[i] = self._start(i)
        self._thread.start()

    def _watch(self) -> None:
        restarts: list[float] = []
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None or self._stopping.is_set():
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60]
                if len(restarts) >= 5:
                    logging.getLogger("rguide.up").error(
                        "worker %d exited (status %s) and keeps dying; not restarting it", i, proc.returncode)
                    self.procs[i] = None
                    continue
                logging.getLogger("rguide.up").warning("worker %d exited (status %s); restarting it",
                                                       i, proc.returncode)
                restarts.append(now)
                self.procs[i] = self._start(i)

    def stop(self) -> None:
        self._stopping.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish the current step's task
        deadline = time.monotonic() + 15
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_up(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    settings = _settings(args)
    port = args.port if args.port is not None else _port_default()
    if args.workers < 1:
        raise CLIError("--workers must be at least 1")
    _check_port(args.host, port)
    _migrate(settings)

    from app.main import create_app
    from model_core.presets import default_preset_name

    preload = args.preload if args.preload is not None else default_preset_name()
    env = {**os.environ, **settings.to_env()}
    if args.threads is not None and args.threads < 1:
        raise CLIError("--threads must be at least 1")
    supervisor = _WorkerSupervisor(args.workers, None if preload == "none" else preload, env, args.threads)
    url = _url(args.host, port)
    described = settings.describe()
    print(f"rguide up: serving on {url}  (API docs: {url}/docs)\n"
          f"  database: {described['database']}\n  broker:   {described['broker']}\n"
          f"  images:   {described['media_dir']}\n  workers:  {args.workers} (preloading: {preload})\n"
          f"  try:      curl -s {url}/v1/presets\n  stop:     Ctrl-C", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    supervisor.start()
    try:
        # Migrated above; the app need not do it again.
        _serve(create_app(settings.replace(migrate_on_start=False)), args.host, port, settings)
    finally:
        print("rguide up: stopping workers", flush=True)
        supervisor.stop()
    return 0


# -- api / worker -------------------------------------------------------------------------

def run_api(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    if args.no_reaper:
        os.environ["RGUIDE_REAPER_INTERVAL_SECONDS"] = "0"
    settings = _settings(args)
    port = args.port if args.port is not None else _port_default()
    if args.processes < 1:
        raise CLIError("--processes must be at least 1")
    _check_port(args.host, port)
    _migrate(settings)
    url = _url(args.host, port)
    print(f"rguide api: serving on {url}  (API docs: {url}/docs); database {settings.describe()['database']}, "
          f"broker {settings.describe()['broker']}", flush=True)
    _serve("app.main:create_app", args.host, port, settings, args.processes)
    return 0


def gpu_ids(spec: str, visible: str | None, count: int) -> list[str]:
    """The CUDA devices ``--gpus`` names, as values for each worker's CUDA_VISIBLE_DEVICES.

    ``all``: every device this process sees (the entries of an inherited
    CUDA_VISIBLE_DEVICES, else 0..count-1); otherwise comma-separated ids.
    """
    if spec.strip().lower() == "all":
        if visible is not None and visible.strip():
            ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        else:
            ids = [str(i) for i in range(count)]
        if not ids:
            raise CLIError("--gpus all: no CUDA device is visible here (run CPU workers without --gpus)")
        return ids
    ids = [v.strip() for v in spec.split(",") if v.strip()]
    if not ids or len(set(ids)) != len(ids) or not all(v.isdigit() or v.startswith(("GPU-", "MIG-")) for v in ids):
        raise CLIError(f"--gpus {spec!r}: give 'all' or distinct device ids such as 0,1")
    return ids


def run_gpu_workers(args: argparse.Namespace) -> int:
    """``rguide worker --gpus``: one ``rguide worker`` per GPU, each pinned to it, supervised until stopped."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    count = 0
    if args.gpus.strip().lower() == "all" and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        import torch

        count = torch.cuda.device_count()
    ids = gpu_ids(args.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"), count)
    settings = _settings(args)
    _migrate(settings)
    base = args.name or f"rguide-{os.getpid()}@%h"
    node, _, host = base.partition("@")
    extra = ["--concurrency", "1", "--loglevel", args.loglevel]
    per_worker = [(f"{node}-gpu{gpu}@{host or '%h'}", {"CUDA_VISIBLE_DEVICES": gpu, "RGUIDE_DEVICE": "cuda"}, extra)
                  for gpu in ids]
    env = {**os.environ, **settings.to_env()}
    from model_core.presets import default_preset_name

    preload = args.preload if args.preload is not None else default_preset_name()
    supervisor = _WorkerSupervisor(len(ids), None if preload == "none" else preload, env, args.threads, per_worker)
    print(f"rguide worker: {len(ids)} worker process(es), one per GPU ({', '.join(ids)}); stop: Ctrl-C", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    supervisor.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        supervisor.stop()


def run_worker(args: argparse.Namespace) -> int:
    if getattr(args, "gpus", None):
        if args.concurrency != 1:
            raise CLIError("--gpus runs one process per GPU; leave out --concurrency")
        return run_gpu_workers(args)
    settings = _settings(args)
    if args.concurrency < 1:
        raise CLIError("--concurrency must be at least 1")
    _migrate(settings)
    from model_core.presets import UnknownPresetError, default_preset_name, get_preset

    preload = args.preload if args.preload is not None else default_preset_name()
    names = [] if preload == "none" else [n.strip() for n in preload.split(",") if n.strip()]
    for name in names:
        try:
            problems = get_preset(name).missing_checkpoints()
        except UnknownPresetError as exc:
            raise CLIError(f"--preload: {exc}") from None
        if problems:
            raise CLIError("--preload: " + "; ".join(problems))
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError("--threads must be at least 1")
        os.environ["RGUIDE_TORCH_THREADS"] = str(args.threads)
    pool = "solo" if args.concurrency == 1 else "prefork"
    # Read by worker.tasks at import and in its start-up signals.
    os.environ["RGUIDE_WORKER_PRELOAD"] = ",".join(names)
    os.environ["RGUIDE_WORKER_POOL"] = pool
    os.environ.update(settings.to_env())
    from worker.tasks import app

    argv = ["worker", "--loglevel", args.loglevel, "--queues", settings.queue, "--pool", pool,
            "--concurrency", str(args.concurrency), "--hostname", args.name or f"rguide-{os.getpid()}@%h",
            # Gossip, mingle and event heartbeats are broadcast chatter this service does not use.
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
    return 0


# -- keys ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _key_store(args: argparse.Namespace):
    """A session on the migrated database; a ValueError inside (no such key or study) is a CLI error."""
    settings = _settings(args)
    _migrate(settings)
    from worker.db import session_scope

    try:
        with session_scope(settings.database_url) as s:
            yield s
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def run_keys_create(args: argparse.Namespace) -> int:
    from app.keys import create_key

    with _key_store(args) as s:
        key, plaintext = create_key(s, args.name, admin=args.admin)
        key_id, prefix = key.id, key.prefix
    print(plaintext)
    print(f"created API key {key_id} (prefix {prefix}) for {args.name!r}; this is the only time it is shown. "
          f"Send it as 'Authorization: Bearer <key>'.", file=sys.stderr)
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    from app.keys import list_keys

    with _key_store(args) as s:
        rows = list_keys(s)
        if not rows:
            print("no API keys; create one with: rguide keys create --name NAME")
        for k in rows:
            state = "revoked " + k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "active"
            used = k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"
            role = "admin" if k.is_admin else "lab"
            print(f"{k.id}  {k.prefix}...  {role:<5}  {state:<28} last used {used:<25} {k.name}")
    return 0


def run_keys_revoke(args: argparse.Namespace) -> int:
    from app.keys import revoke_key

    with _key_store(args) as s:
        key = revoke_key(s, args.key)
        print(f"revoked API key {key.id} ({key.name})")
    return 0


def run_keys_grant(args: argparse.Namespace) -> int:
    from app.keys import lookup_key
    from app.survey import access
    from app.survey.studies import get_study

    with _key_store(args) as s:
        study = get_study(s, args.study)
        if study is None:
            raise ValueError(f"no study with id {args.study!r}")
        key = lookup_key(s, args.key)
        changed = access.grant(s, study, key) if args.grant else access.revoke_grant(s, study, key)
        verb = ("granted" if changed else "already had access to") if args.grant else \
            ("took back the grant of" if changed else "had no grant for")
        print(f"key {key.prefix}... ({key.name}) {verb} study {study.id}")
    return 0
