"""Shared plumbing for the benchmarks: the ../shared/bench recipe, Dovecot, the SMTP sink, databases.

Not a benchmark itself. The scripts import it as `benchlib` (bench/ is on sys.path when a script
in it runs) and the project root is put on sys.path here, so `worker` and `tests` import too.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import MailboxSpec, write_config  # noqa: E402
from tests.servers import free_port  # noqa: E402

MAIL_USER = "complaints@example.com"  # the account mailserver.sh creates, and our mailbox address
MAIL_PASSWORD = "secret"
NOTIFY = "complaints-team@example.com"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def shared_bench_dir() -> Path | None:
    """../shared/bench (or $BENCH_SHARED/bench) when it holds the recipe, else None."""
    shared = Path(os.environ.get("BENCH_SHARED") or ROOT.parent / "shared")
    bench = shared / "bench"
    needed = ("gen_mail.py", "mailserver.sh", "smtp_sink.py")
    return bench if all((bench / name).is_file() for name in needed) else None


def require_shared(what: str) -> Path | None:
    """The recipe folder, or None after saying why `what` is skipped (the caller exits 0)."""
    found = shared_bench_dir()
    if found is None:
        where = os.environ.get("BENCH_SHARED") or ROOT.parent / "shared"
        print(f"SKIPPED {what}: the benchmark mail recipe is not at {where}/bench "
              "(gen_mail.py, mailserver.sh, smtp_sink.py); set BENCH_SHARED to the shared folder.")
    return found


def begin(name: str, title: str) -> Path:
    """Every benchmark's start: clean up on SIGTERM, print the banner and the machine, and make
    its work folder (readable by Dovecot's unprivileged processes, which serve a Maildir there)."""
    stop_cleanly_on_sigterm()
    print(f"== {name}: {title} ==")
    for line in machine_lines():
        print(line)
    work = Path(tempfile.mkdtemp(prefix=f"complaints-bench-{name}-"))
    work.chmod(0o755)
    return work


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers and databases a benchmark made are removed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# ---------------------------------------------------------------------------- machine


def _command_output(args: Sequence[str]) -> str | None:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def postgres_version() -> str | None:
    try:
        from sqlalchemy import create_engine, text
        engine = create_engine(PG_ADMIN_URL)
        try:
            with engine.connect() as connection:
                return str(connection.execute(text("SHOW server_version")).scalar())
        finally:
            engine.dispose()
    except Exception:
        return None


def machine_lines() -> list[str]:
    """What the figures were measured on: they only compare within one run on one machine."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kb / 1024 / 1024:.1f} GiB"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    dovecot = _command_output(["dovecot", "--version"]) or "not installed"
    return [
        f"date        {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"cpu         {cpu}, {os.cpu_count()} cores; RAM {ram}; load average {load}",
        f"os          {platform.system()} {platform.release()}",
        f"python      {platform.python_implementation()} {platform.python_version()}",
        f"sqlite      {sqlite3.sqlite_version}",
        f"postgresql  {postgres_version() or 'not reachable at ' + PG_ADMIN_URL}",
        f"dovecot     {dovecot}",
    ]


# ---------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Timed:
    """One command run under /usr/bin/time -v."""

    returncode: int
    wall_s: float
    max_rss_kb: int
    user_s: float
    sys_s: float

    @property
    def rss_mib(self) -> float:
        return self.max_rss_kb / 1024


def run_timed(args: Sequence[str], *, log: Path, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> Timed:
    """Run `args` with its output in `log`; wall time from here, peak RSS from /usr/bin/time -v."""
    stats = log.with_suffix(".time")
    prefix = ["/usr/bin/time", "-v", "-o", str(stats)] if os.access("/usr/bin/time", os.X_OK) else []
    with log.open("wb") as out:
        started = time.perf_counter()
        code = subprocess.run([*prefix, *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                              env=env).returncode
        wall = time.perf_counter() - started
    fields = parse_time_v(stats) if prefix else {}
    return Timed(returncode=code, wall_s=wall, max_rss_kb=int(fields.get("max_rss_kb", 0)),
                 user_s=fields.get("user_s", 0.0), sys_s=fields.get("sys_s", 0.0))


def parse_time_v(path: Path) -> dict[str, float]:
    """The figures we use from GNU time's -v report."""
    keys = {"Maximum resident set size (kbytes)": "max_rss_kb", "User time (seconds)": "user_s",
            "System time (seconds)": "sys_s"}
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.strip().rpartition(": ")
            if name in keys:
                found[keys[name]] = float(value)
    return found


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------- servers


@dataclass(slots=True)
class MailServer:
    """The recipe's throwaway Dovecot (mailserver.sh), in our own folder on a free port."""

    recipe: Path
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "BENCH_DOVECOT_DIR": str(self.root), "BENCH_IMAP_PORT": str(self.port),
                "BENCH_MAIL_USER": MAIL_USER, "BENCH_MAIL_PASS": MAIL_PASSWORD,
                "BENCH_PYTHON": sys.executable}

    @property
    def maildir(self) -> Path:
        return self.root / "mail" / MAIL_USER

    def _script(self, *args: str) -> str:
        # Output through a file: the Dovecot that `start` daemonises keeps a pipe open forever.
        with tempfile.TemporaryFile("w+") as out:
            subprocess.run([str(self.recipe / "mailserver.sh"), *args], env=self.env, check=True,
                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            out.seek(0)
            return out.read().strip()

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def count(self) -> int:
        return int(self._script("count"))

    def load(self, mailset: Path, expected: int) -> None:
        """Fill INBOX with a copy of a generated Maildir, as mailserver.sh load does (no regenerating).

        The whole Maildir goes first, Dovecot's indexes included, so UIDs restart at 1 in
        generation order; safe while no IMAP session is open.
        """
        shutil.rmtree(self.maildir, ignore_errors=True)
        shutil.copytree(mailset, self.maildir)
        self._own_maildir()
        found = self.count()
        if found != expected:
            raise RuntimeError(f"INBOX holds {found} messages after loading, expected {expected}")

    def load_empty(self) -> None:
        shutil.rmtree(self.maildir, ignore_errors=True)
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True)
        self._own_maildir()

    def _own_maildir(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "dovecot:dovecot", str(self.maildir)], check=True)


def generate_mail(recipe: Path, count: int, out: Path, *, eml: bool = False
                  ) -> tuple[Path, list[dict[str, Any]]]:
    """The deterministic mail set under `out`, as a Maildir (or NNNNNN.eml files), and its manifest."""
    folder, manifest = out / ("eml" if eml else "mailset"), out / f"manifest-{count}.jsonl"
    subprocess.run([sys.executable, str(recipe / "gen_mail.py"), "--count", str(count),
                    "--eml-dir" if eml else "--maildir", str(folder), "--manifest", str(manifest)],
                   check=True)
    return folder, [json.loads(line) for line in manifest.read_text().splitlines() if line]


# Our header-only aiosmtpd sink; the recipe's smtp_sink.py parses every whole message.
LIGHT_SINK = ROOT / "bench" / "light_sink.py"


class Sink:
    """An aiosmtpd sink script (LIGHT_SINK, or the recipe's smtp_sink.py) in its own process,
    logging one JSON line per message."""

    def __init__(self, script: Path, log: Path, port: int | None = None) -> None:
        self.script, self.log, self.port = script, log, port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        # CPU seconds the sink used, read as it stops: it shares the machine with the worker.
        self.cpu_s = 0.0

    def __enter__(self) -> Sink:
        self.log.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, str(self.script), "--host", "127.0.0.1",
             "--port", str(self.port), "--log", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self._proc)
        return self

    def __exit__(self, *_: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self.cpu_s = process_cpu_seconds(proc.pid)
            terminate(proc, 10)

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc), 0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: utime and stime are the 12th and 13th fields (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def terminate(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, and SIGKILL if it has not stopped after `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)  # waiting on another process to bind; nothing to block on
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# ---------------------------------------------------------------------------- databases


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A throwaway PostgreSQL database (trust auth on 127.0.0.1), dropped afterwards."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def worker_config(path: Path, *, db_url: str, imap_port: int, smtp_port: int, notify: bool = True,
                  worker: dict[str, Any] | None = None) -> Path:
    """A config like config.example.toml's: one claranet-soho mailbox on the recipe's account,
    processed mail moved to a folder, staff notified of every customer message."""
    box = MailboxSpec(name="bench", rules="claranet-soho", address=MAIL_USER,
                      processed_folder="Processed",
                      extra={"password": MAIL_PASSWORD, "notify": [NOTIFY] if notify else []})
    return write_config(path, db_url=db_url, imap_port=imap_port, smtp_port=smtp_port,
                        mailboxes=[box], worker=worker)


def worker_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "worker", "--config", str(config), *args]


def migrate(config: Path) -> None:
    subprocess.run(worker_command(config, "db", "upgrade"), cwd=ROOT, check=True,
                   capture_output=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
