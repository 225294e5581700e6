"""Service settings, read from the environment once per process.

One ``Settings`` object configures the API, the workers and the reaper, so
that ``rguide up``, ``rguide api``, ``rguide worker`` and docker-compose agree
by construction: they all read the same variables.

With nothing set, everything lives under ``./rguide-data``: a SQLite
database, kombu's ``filesystem://`` broker folders and the PNG media folder.
``DATABASE_URL`` switches the store (e.g. PostgreSQL), ``REDIS_URL`` the
broker (and the rate limiter's counters).
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping


class SettingsError(ValueError):
    """A setting from the environment is malformed; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: must be a finite number >= {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: use 1/0, true/false, yes/no or on/off")


def _addresses(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for part in (env.get(name) or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not an IP address or network (e.g. 10.0.0.5 or "
                                "10.0.0.0/24)") from None
        out.append(part)
    return tuple(out)


# Amazon Mechanical Turk: the worker site frames an ExternalQuestion, and a HIT is submitted to
# turkSubmitTo (www.mturk.com, or the sandbox). Production and sandbox by default.
DEFAULT_MTURK_HOSTS = ("https://worker.mturk.com", "https://www.mturk.com", "https://workersandbox.mturk.com")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


def _origins(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    out = []
    for part in re.split(r"[\s,]+", raw.strip()):
        if not part:
            continue
        part = part.rstrip("/")
        if not _ORIGIN.match(part):
            raise SettingsError(f"{name}: {part!r} is not an origin (scheme and host, optionally a port, e.g. "
                                "https://worker.mturk.com)")
        out.append(part.lower())
    return tuple(out)


def _secret(env: Mapping[str, str]) -> str | None:
    raw = (env.get("RGUIDE_SECRET_KEY") or "").strip()
    if raw and len(raw) < 32:
        raise SettingsError("RGUIDE_SECRET_KEY is shorter than 32 characters: use e.g. the output of "
                            "'python -c \"import secrets; print(secrets.token_hex(32))\"'")
    return raw or None


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``"60/minute"`` -> (60, 60.0), ``"10/30s"`` -> (10, 30.0); ``"0"`` or ``"off"`` -> no limit."""
    text = text.strip().lower()
    if text in ("", "0", "off", "none"):
        return 0, 0.0
    m = re.fullmatch(r"(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*([a-z]+))?", text)
    units = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
             "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
    unit = (m.group(3) or "minute") if m else ""
    if unit.endswith("s") and unit[:-1] in units:
        unit = unit[:-1]
    if not m or unit not in units:
        raise SettingsError(f"RGUIDE_RATE_LIMIT={text!r}: write COUNT/UNIT with UNIT second, minute, hour or day "
                            "(optionally with a multiple, e.g. 10/30s)")
    window = float(m.group(2) or 1) * units[unit]
    if window <= 0:
        raise SettingsError(f"RGUIDE_RATE_LIMIT={text!r}: the window must be positive")
    return int(m.group(1)), window


def normalise_database_url(url: str) -> str:
    """Pick the installed driver: psycopg 3 for PostgreSQL (psycopg2 is not a dependency)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    broker_url: str
    media_dir: Path
    queue: str = "rguide.generation"
    # Limits checked at the edge, before anything is stored.
    max_images_per_request: int = 16
    analysis_max_images: int = 5000  # held-out images an analysis job reads, or images it generates
    max_scale: float = 100.0
    max_steps: int = 1000
    max_body_bytes: int = 1 << 20    # request bodies above this are refused (413) before they are read whole
    # Access.
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-For is believed; none by default
    generation_requires_key: bool = False
    # Origins that may frame an MTurk study's pages (CSP frame-ancestors) and receive its HITs
    # (turkSubmitTo); empty: MTurk studies cannot be framed.
    mturk_hosts: tuple[str, ...] = DEFAULT_MTURK_HOSTS
    rate_limit: int = 60            # requests per window per API key (or client address); 0 = off
    rate_window_seconds: float = 60.0
    # Worker and reaper.
    lease_seconds: float = 30.0      # a running job whose lease is older than this has lost its worker
    heartbeat_seconds: float = 5.0   # how often a worker renews its lease (and its row in service_workers)
    requeue_after_seconds: float = 120.0  # a queued job not picked up this long is sent to the broker again
    reaper_interval_seconds: float = 10.0  # 0 disables the API's periodic reaper
    max_attempts: int = 3            # worker losses before a job is failed instead of re-queued
    batch_max_images: int = 32       # waiting jobs with the same settings are sampled together up to this
    # When a claim finds companions (a burst of requests is arriving), wait this long once and claim again:
    # requests sent together reach the database over tens of ms, and a straggler sampled alone costs a whole run.
    # A lone job never waits. 0 turns it off.
    batch_gather_seconds: float = 0.05
    progress_interval_seconds: float = 0.25
    worker_stale_seconds: float = 30.0
    # The filesystem broker polls its folder: half this is the mean wait before a worker sees a job.
    # 0.05 s costs an idle `rguide up` about 1 % of a core (0.6 % at 0.2 s), measured in docs/service.md.
    broker_poll_seconds: float = 0.05
    migrate_on_start: bool = True
    # Signs researcher sessions; None: a random secret kept in data_dir/secret_key (one machine).
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(overrides.pop("data_dir", None) or env.get("RGUIDE_DATA_DIR") or "rguide-data")
        data_dir = data_dir.expanduser().resolve()
        database_url = normalise_database_url(
            env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'rguide.db'}")
        redis_url = env.get("REDIS_URL") or None
        broker_url = env.get("RGUIDE_BROKER_URL") or redis_url or "filesystem://localhost/"
        media_dir = Path(env.get("RGUIDE_MEDIA_DIR") or data_dir / "media").expanduser().resolve()
        rate_n, rate_window = parse_rate_limit(env.get("RGUIDE_RATE_LIMIT", "60/minute"))
        lease = _float(env, "RGUIDE_LEASE_SECONDS", 30.0, minimum=0.5)
        values = dict(
            data_dir=data_dir, database_url=database_url, redis_url=redis_url, broker_url=broker_url,
            media_dir=media_dir, queue=env.get("RGUIDE_QUEUE") or "rguide.generation",
            max_images_per_request=_int(env, "RGUIDE_MAX_IMAGES", 16, minimum=1),
            analysis_max_images=_int(env, "RGUIDE_ANALYSIS_MAX_IMAGES", 5000, minimum=1),
            max_scale=_float(env, "RGUIDE_MAX_SCALE", 100.0),
            max_steps=_int(env, "RGUIDE_MAX_STEPS", 1000, minimum=1),
            max_body_bytes=_int(env, "RGUIDE_MAX_BODY_BYTES", 1 << 20, minimum=1024),
            generation_requires_key=_bool(env, "RGUIDE_REQUIRE_KEY_FOR_GENERATION", False),
            trusted_proxies=_addresses(env, "RGUIDE_TRUSTED_PROXIES"),
            mturk_hosts=_origins(env, "RGUIDE_MTURK_HOSTS", DEFAULT_MTURK_HOSTS),
            rate_limit=rate_n, rate_window_seconds=rate_window,
            lease_seconds=lease,
            heartbeat_seconds=_float(env, "RGUIDE_HEARTBEAT_SECONDS", min(5.0, lease / 3), minimum=0.05),
            requeue_after_seconds=_float(env, "RGUIDE_REQUEUE_AFTER_SECONDS", 120.0),
            reaper_interval_seconds=_float(env, "RGUIDE_REAPER_INTERVAL_SECONDS", 10.0),
            max_attempts=_int(env, "RGUIDE_MAX_ATTEMPTS", 3, minimum=1),
            batch_max_images=_int(env, "RGUIDE_BATCH_MAX_IMAGES", 32, minimum=1),
            batch_gather_seconds=_float(env, "RGUIDE_BATCH_GATHER_SECONDS", 0.05),
            progress_interval_seconds=_float(env, "RGUIDE_PROGRESS_INTERVAL_SECONDS", 0.25),
            worker_stale_seconds=_float(env, "RGUIDE_WORKER_STALE_SECONDS", max(30.0, 3 * lease), minimum=1),
            broker_poll_seconds=_float(env, "RGUIDE_BROKER_POLL_SECONDS", 0.05, minimum=0.01),
            migrate_on_start=_bool(env, "RGUIDE_MIGRATE_ON_START", True),
            secret_key=_secret(env),
        )
        values.update(overrides)
        if values["heartbeat_seconds"] >= values["lease_seconds"]:
            raise SettingsError("RGUIDE_HEARTBEAT_SECONDS must be shorter than RGUIDE_LEASE_SECONDS, "
                                "or every running job would look abandoned between heartbeats")
        return cls(**values)

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def broker_folders(self) -> dict[str, Path]:
        root = self.data_dir / "broker"
        return {"queue": root / "queue", "processed": root / "processed", "control": root / "control"}

    def ensure_dirs(self) -> None:
        """Create the folders the embedded defaults need (no-op for servers we don't own)."""
        self.media_dir.mkdir(parents=True, exist_ok=True)
        if self.is_sqlite:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.uses_filesystem_broker:
            for path in self.broker_folders().values():
                path.mkdir(parents=True, exist_ok=True)

    def to_env(self) -> dict[str, str]:
        """Environment variables that make another process build these same settings."""
        env = {
            "RGUIDE_DATA_DIR": str(self.data_dir), "DATABASE_URL": self.database_url,
            "RGUIDE_BROKER_URL": self.broker_url, "RGUIDE_MEDIA_DIR": str(self.media_dir),
            "RGUIDE_QUEUE": self.queue, "RGUIDE_MAX_IMAGES": str(self.max_images_per_request),
            "RGUIDE_ANALYSIS_MAX_IMAGES": str(self.analysis_max_images),
            "RGUIDE_MAX_SCALE": repr(self.max_scale), "RGUIDE_MAX_STEPS": str(self.max_steps),
            "RGUIDE_MAX_BODY_BYTES": str(self.max_body_bytes),
            "RGUIDE_REQUIRE_KEY_FOR_GENERATION": "1" if self.generation_requires_key else "0",
            "RGUIDE_TRUSTED_PROXIES": ",".join(self.trusted_proxies),
            "RGUIDE_MTURK_HOSTS": ",".join(self.mturk_hosts),
            "RGUIDE_RATE_LIMIT": f"{self.rate_limit}/{self.rate_window_seconds!r}s" if self.rate_limit else "0",
            "RGUIDE_LEASE_SECONDS": repr(self.lease_seconds),
            "RGUIDE_HEARTBEAT_SECONDS": repr(self.heartbeat_seconds),
            "RGUIDE_REQUEUE_AFTER_SECONDS": repr(self.requeue_after_seconds),
            "RGUIDE_REAPER_INTERVAL_SECONDS": repr(self.reaper_interval_seconds),
            "RGUIDE_MAX_ATTEMPTS": str(self.max_attempts),
            "RGUIDE_BATCH_MAX_IMAGES": str(self.batch_max_images),
            "RGUIDE_BATCH_GATHER_SECONDS": repr(self.batch_gather_seconds),
            "RGUIDE_PROGRESS_INTERVAL_SECONDS": repr(self.progress_interval_seconds),
            "RGUIDE_WORKER_STALE_SECONDS": repr(self.worker_stale_seconds),
            "RGUIDE_BROKER_POLL_SECONDS": repr(self.broker_poll_seconds),
            "RGUIDE_MIGRATE_ON_START": "1" if self.migrate_on_start else "0",
        }
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.secret_key:
            env["RGUIDE_SECRET_KEY"] = self.secret_key
        return env

    def session_secret(self) -> str:
        """``RGUIDE_SECRET_KEY``, else a random secret created once in ``data_dir/secret_key`` (mode 0600).

        Every API process that serves the researcher pages must share it: on
        several machines set ``RGUIDE_SECRET_KEY`` to the same value on each.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.is_file():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
        text = path.read_text().strip()
        if len(text) < 32:
            raise SettingsError(f"{path} holds no usable secret (at least 32 characters); delete it to make a "
                                "new one, or set RGUIDE_SECRET_KEY")
        return text

    def describe(self) -> dict[str, str]:
        """What a startup log line shows: no passwords."""
        out = {k: str(v) for k, v in asdict(self).items() if k in ("data_dir", "media_dir", "queue")}
        out["database"] = _redact(self.database_url)
        out["broker"] = _redact(self.broker_url)
        return out


# Set by ``rguide worker`` / ``rguide up`` for the worker processes they start (rguide/cmd_serve.py).
WORKER_PRELOAD = "RGUIDE_WORKER_PRELOAD"  # comma-separated presets to load when a pool process starts
TORCH_THREADS = "RGUIDE_TORCH_THREADS"    # torch CPU threads per pool process
WORKER_POOL = "RGUIDE_WORKER_POOL"        # the Celery pool ("solo" or "prefork"), recorded in service_workers


@dataclass(frozen=True)
class WorkerProcess:
    """How one worker process runs: what it preloads, its torch threads, its pool.

    Read in the worker's start-up signals (``worker.tasks``), after the
    command that starts it has set the variables, so it is built per call
    rather than once at import like :class:`Settings`.
    """
    preload: tuple[str, ...] = ()
    torch_threads: int | None = None
    pool: str = "solo"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "WorkerProcess":
        env = os.environ if env is None else env
        preload = tuple(n.strip() for n in env.get(WORKER_PRELOAD, "").split(",") if n.strip())
        threads = _int(env, TORCH_THREADS, 0, minimum=1) if (env.get(TORCH_THREADS) or "").strip() else None
        return cls(preload=preload, torch_threads=threads, pool=env.get(WORKER_POOL) or "solo")

    def describe(self) -> dict[str, str]:
        """What the worker's row in service_workers records."""
        return {"preload": ",".join(self.preload), "pool": self.pool}


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
