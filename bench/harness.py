"""Start the real platform in its own folder, for benchmarks, fault drills and the production-roles test.

Two modes:
  embedded    `make run`'s processes (platform/run-embedded.sh): SQLite + the filesystem broker
  production  platform/entrypoint.sh roles (web, worker-inference, worker-training, beat) with
              config.settings.production on PostgreSQL (a database of its own on the local server)
              and a Redis server of its own on a free port

Nothing here is shared with a running `make run`: database, media, broker and port are fresh.
Each platform's folder is made under the repository's var/bench/ (BENCH_WORKDIR_PARENT to change), on
the filesystem where `make run` keeps its own var/, not under the system's temporary folder: on the
development machines /tmp creates a file in 0.8 ms of CPU against 0.035 ms under the repository (ext4,
one disk), and each study writes four or five files (image, rendition, broker message, overlay).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
STARTER = ROOT / "models" / "starter"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
PRODUCTION_ROLES = ("web", "worker-inference", "worker-training", "beat")
WORKDIR_PARENT = Path(os.environ.get("BENCH_WORKDIR_PARENT", ROOT / "var" / "bench"))


def bench_folder(prefix: str) -> Path:
    """A new, empty folder under WORKDIR_PARENT for one benchmark run."""
    WORKDIR_PARENT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=WORKDIR_PARENT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "a condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class RedisServer:
    """A redis-server of our own on a free port; stop()/start() simulate a broker outage."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, timeout=20, what="redis-server")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


class Platform:
    def __init__(
        self, mode: str, *, workdir: Path | None = None, extra_env: dict | None = None, model: Path | None = None
    ) -> None:
        assert mode in {"embedded", "production"}
        self.mode = mode
        self.model = model or STARTER
        self.workdir = Path(workdir or bench_folder(f"cxr-{mode}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.redis: RedisServer | None = None
        self.database = f"cxr_{mode}_{os.getpid()}_{self.port}"
        self.extra_env = extra_env or {}
        self.token = ""
        self.env = self._environment()
        self._roles: dict[str, list[str]] = {}
        self._held: set[str] = set()  # roles stopped on purpose: the supervisor leaves them down
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self.restarts: list[tuple[str, int]] = []

    # ----------------------------------------------------------------------------- setup
    def _environment(self) -> dict:
        env = {
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "PORT": str(self.port),
            "MEDIA_ROOT": str(self.workdir / "media"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
            "REQUEUE_AFTER_SECONDS": "30",
            "PREDICTION_LEASE_SECONDS": "30",
        }
        for key in ("CI", "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            env.pop(key, None)
        if self.mode == "embedded":
            env.update(
                DJANGO_SETTINGS_MODULE="config.settings.base",
                DATABASE_URL=f"sqlite:///{self.workdir / 'db.sqlite3'}",
                BROKER_DIR=str(self.workdir / "broker"),
            )
        else:
            env.update(
                DJANGO_SETTINGS_MODULE="config.settings.production",
                DATABASE_URL=f"{PG_URL}/{self.database}",
                SECRET_KEY="bench-only-not-secret",
                DEIDENTIFICATION_KEY="bench-only-not-secret-either",
                ALLOWED_HOSTS="127.0.0.1,localhost",
                SECURE_SSL_REDIRECT="false",
                SESSION_COOKIE_SECURE="false",
                CSRF_COOKIE_SECURE="false",
                SECURE_HSTS_SECONDS="0",
                GUNICORN_LOG_LEVEL="warning",
                CELERY_LOG_LEVEL="warning",
            )
        env.update(self.extra_env)
        return env

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=check, capture_output=True, text=True
        )

    def prepare(self) -> None:
        """A fresh database with the schema, the model (the starter unless told) active and a user with a token."""
        (self.workdir / "media").mkdir(parents=True, exist_ok=True)
        if self.mode == "production":
            self._psql(f'DROP DATABASE IF EXISTS "{self.database}"')
            self._psql(f'CREATE DATABASE "{self.database}"')
            self.redis = RedisServer(self.workdir)
            self.redis.start()
            self.env["CELERY_BROKER_URL"] = self.redis.url
        self.manage("migrate", "--noinput", "-v0")
        self.manage("import_model", str(self.model), "--activate")
        # A reviewer of one site ("bench"), holding an API token (knox: the token string is shown once).
        script = (
            "from django.contrib.auth import get_user_model; from knox.models import AuthToken; "
            "from studies.sites import membership_set, site_get_or_create; "
            "u, _ = get_user_model().objects.get_or_create(username='bench'); "
            "membership_set(user=u, site=site_get_or_create(name='bench'), role='reviewer'); "
            "print(AuthToken.objects.create(user=u)[1])"
        )
        self.token = self.manage("shell", "-c", script).stdout.strip().splitlines()[-1]

    def _psql(self, sql: str) -> None:
        subprocess.run(["psql", PG_URL + "/postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True,
                       capture_output=True)  # fmt: skip

    # ----------------------------------------------------------------------------- processes
    def _spawn(self, name: str, args: list[str]) -> None:
        self._roles[name] = args
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(
        self, roles: tuple[str, ...] = PRODUCTION_ROLES, *, supervise: bool = False, require_workers: bool = True
    ) -> None:
        """Start the roles and wait for /readyz/. ``supervise``: restart a role that exits, after
        a second, as compose's ``restart: unless-stopped`` does."""
        if self.mode == "embedded":
            self._spawn("embedded", ["bash", "platform/run-embedded.sh"])
        else:
            for role in roles:
                self.start_role(role)
        self._accept = {"ok"} if require_workers else {"ok", "degraded"}
        wait_until(self._ready, timeout=180, interval=0.5, what=f"the {self.mode} platform to answer")
        if supervise:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            for name, process in list(self.processes.items()):
                if process.poll() is not None and name not in self._held:
                    self.restarts.append((name, process.returncode))
                    self._spawn(name, self._roles[name])

    def hold(self, role: str) -> None:
        """Keep a role down (the supervisor will not restart it) until release()."""
        self._held.add(role)

    def release(self, role: str) -> None:
        self._held.discard(role)

    def start_role(self, role: str) -> None:
        self._spawn(role, ["bash", "platform/entrypoint.sh", role])

    def _ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None and self._supervisor is None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.workdir / (name + '.log')}")
        try:
            body = json.loads(self.get("/readyz/"))
        except (OSError, ValueError):
            return False
        return body.get("status") in self._accept

    def process_cpu(self) -> dict[tuple[str, int], float]:
        """CPU seconds (user + system) so far of each live process of the platform, by (kind, pid): "web"
        (gunicorn, runserver), "worker" (celery workers and their pool), "other" (beat, supervisors) and,
        on PostgreSQL, "postgres" (the backends of this platform's database)."""
        import psutil

        members = []
        for process in self.processes.values():
            try:
                root = psutil.Process(process.pid)
                members += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        backend = f" {self.database} "
        if self.mode == "production":
            members += [p for p in psutil.process_iter(["cmdline"]) if backend in " ".join(p.info["cmdline"] or [])]
        seconds: dict[tuple[str, int], float] = {}
        for member in members:
            try:
                command, times = " ".join(member.cmdline()), member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            if command.startswith("postgres: "):
                kind = "postgres"
            elif "gunicorn" in command or "runserver" in command:
                kind = "web"
            elif " worker" in command and "celery" in command:
                kind = "worker"
            else:
                kind = "other"
            seconds[(kind, member.pid)] = times.user + times.system
        return seconds

    def signal_role(self, role: str, sig: int) -> None:
        process = self.processes[role]
        os.killpg(process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            process.wait(timeout=60)

    def stop(self) -> dict[str, float]:
        """SIGTERM every process group and wait; returns the seconds each took to stop."""
        self._stopping.set()
        if self._supervisor:
            self._supervisor.join(timeout=5)
        took = {}
        for name, process in self.processes.items():
            started = time.monotonic()
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                except ProcessLookupError:
                    pass
            took[name] = time.monotonic() - started
        self.processes.clear()
        if self.redis:
            self.redis.stop()
        if self.mode == "production":
            self._psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        return took

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ----------------------------------------------------------------------------- HTTP
    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, dict, bytes]:  # fmt: skip
        headers = {"Authorization": f"Token {self.token}", **(headers or {})} if self.token else dict(headers or {})
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str) -> bytes:
        return self.request("GET", path, timeout=10)[2]

    def upload(self, data: bytes, *, filename: str = "cxr.jpg", source: str = "") -> tuple[int, dict]:
        boundary = "----cxrbench" + os.urandom(8).hex()
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        ]
        if source:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="source"\r\n\r\n{source}\r\n'.encode())
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        try:
            status, headers, content = self.request(
                "POST",
                "/api/studies/",
                body=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        except OSError as exc:  # the connection itself failed: count it, never crash the client
            return 0, {"error": str(exc)}
        try:
            payload = json.loads(content) if content else {}
        except ValueError:
            payload = {"raw": content[:200].decode(errors="replace")}
        payload["_headers"] = headers
        return status, payload

    def count(self, status: str) -> int:
        return json.loads(self.get(f"/api/studies/?status={status}&page_size=1"))["count"]

    def settled(self) -> int:
        """How many studies are predicted or failed, read from the database itself: polling the API
        while measuring throughput spends the web role's CPU on the benchmark (two list requests
        every 100 ms were about 2 of the 19 ms of web CPU per upload)."""
        sql = "SELECT count(*) FROM studies_study WHERE status IN ('predicted', 'failed')"
        if self.mode == "embedded":
            import sqlite3

            with sqlite3.connect(f"file:{self.workdir / 'db.sqlite3'}?mode=ro", uri=True, timeout=5) as connection:
                return connection.execute(sql).fetchone()[0]
        import psycopg2

        connection = psycopg2.connect(f"{PG_URL}/{self.database}")
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchone()[0]
        finally:
            connection.close()

    def statuses(self) -> dict[str, int]:
        return {s: self.count(s) for s in ("queued", "processing", "predicted", "failed")}


class CpuSampler:
    """CPU seconds a platform's processes used while it runs, by kind (Platform.process_cpu: web, worker,
    other, postgres), sampled twice a second so that processes started or replaced meanwhile count (one
    that ends between samples loses its last half second), plus this process ("client": the benchmark's
    own clients) and everything else on the machine ("machine_other": other people's jobs)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for key, seconds in self.platform.process_cpu().items():
            self.first.setdefault(key, 0.0 if self._thread.is_alive() else seconds)
            self.last[key] = seconds

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    @staticmethod
    def _busy() -> float:
        import psutil

        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def start(self) -> None:
        self._sample()
        self.busy, self.client = self._busy(), time.process_time()
        self.wall, self.load = time.perf_counter(), os.getloadavg()[0]
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """CPU seconds per kind, plus the run's wall time ("wall") and the load average when it began ("load")."""
        self._stop.set()
        self._thread.join()
        self._sample()
        used = dict.fromkeys(("web", "worker", "other", "postgres"), 0.0)
        for key, seconds in self.last.items():
            used[key[0]] += seconds - self.first[key]
        used["client"] = time.process_time() - self.client
        used["machine_other"] = max(0.0, self._busy() - self.busy - sum(used.values()))
        used["wall"], used["load"] = time.perf_counter() - self.wall, self.load
        return used


def cxr_images(limit: int, *, data_dir: Path | None = None) -> list[Path]:
    """Real X-rays from the shared development set (../shared/data/cxr), else the bundled samples."""
    data_dir = data_dir or Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data" / "cxr"))
    folder = data_dir / "images" if (data_dir / "images").is_dir() else ROOT / "samples" / "images"
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not paths:
        raise SystemExit(f"no images under {folder}")
    return [paths[i % len(paths)] for i in range(limit)]
