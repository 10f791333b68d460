"""Real servers for the tests: a throwaway Dovecot IMAP server and free-port helpers.

Not a conftest: the conftest imports from here. The embedded (pymap/aiosmtpd) servers live in
:mod:`worker.embedded` because `complaints-worker demo` uses them too.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["Dovecot", "dovecot_available", "dovecot_binary", "free_port"]

_LOOPBACK = "127.0.0.1"


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on right now (the OS's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dovecot_binary() -> str | None:
    """Path of the dovecot binary (PATH, then /usr/sbin), or None."""
    found = shutil.which("dovecot")
    if found:
        return found
    fallback = "/usr/sbin/dovecot"
    return fallback if os.access(fallback, os.X_OK) else None


def _system_users() -> tuple[str, str]:
    """(internal user, login user) that Dovecot's unprivileged processes run as."""
    if os.geteuid() == 0:
        return "dovecot", "dovenull"
    # Not root: Dovecot cannot switch users, so everything runs as us.
    me = pwd.getpwuid(os.geteuid()).pw_name
    return me, me


@functools.cache
def dovecot_available() -> str | None:
    """None if a throwaway Dovecot can run here, else why not (for pytest.skip/fail)."""
    binary = dovecot_binary()
    if binary is None:
        return "dovecot is not installed (apt-get install dovecot-imapd)"
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{binary} --version failed: {exc}"
    if not re.match(r"2\.3\.", out.strip()):
        return f"dovecot {out.strip() or '?'} found; the test config is for Dovecot 2.3"
    for user in set(_system_users()):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} is missing (it comes with the dovecot-core package)"
    return None


class _PortTaken(RuntimeError):
    """Dovecot could not listen: something else holds the port."""


# Every Dovecot that may still be running, so that it is killed when the interpreter exits
# even if a test (or a fixture's teardown) failed before stopping it.
_RUNNING: set[Dovecot] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.close()


class Dovecot:
    """A throwaway Dovecot 2.3 IMAP server on loopback, for integration tests.

    Everything (config, passwd-file, Maildirs, logs, sockets) lives in a temp dir that
    :meth:`close` removes. Plaintext LOGIN/AUTHENTICATE PLAIN on loopback, no TLS, Maildir
    storage (keyword flags supported), any folder creatable with CREATE.

    :meth:`stop` then :meth:`start` restarts the server on the same port with the same data,
    which keeps UIDs and UIDVALIDITY. As a context manager it starts on enter and on exit stops
    every Dovecot process and removes the temp dir.

    Args:
        users: login -> password.
        port: port to listen on; default a free one (kept across restarts).
    """

    host = _LOOPBACK

    def __init__(self, users: Mapping[str, str], *, port: int | None = None) -> None:
        reason = dovecot_available()
        if reason is not None:
            raise RuntimeError(reason)
        binary = dovecot_binary()
        assert binary is not None
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.root = Path(tempfile.mkdtemp(prefix="complaints-dovecot-"))
        self._users: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._listening = False  # whether the running master ever held our port
        self._may_move_port = port is None
        self._lock = threading.Lock()
        self._internal_user, self._login_user = _system_users()
        try:
            self._write_files()
            for login, password in users.items():
                self.add_user(login, password)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def _instance(self) -> str:
        return f"complaints-test-{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "dovecot.log"

    @property
    def _stderr_path(self) -> Path:
        return self.root / "log" / "stderr.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def maildir(self, login: str) -> Path:
        """The user's Maildir (INBOX) on disk."""
        return self.root / "mail" / login

    def add_user(self, login: str, password: str) -> None:
        """Add or re-password an account; Dovecot re-reads the passwd-file by itself."""
        for value in (login, password):
            if not value or any(c in value for c in ":\r\n\0"):
                raise ValueError(f"unusable login/password for a passwd-file: {value!r}")
        self._users[login] = password
        users_file = self.root / "users"
        tmp = users_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self._users.items()))
        self._chown(tmp, group_only=True)
        tmp.chmod(0o640)
        tmp.replace(users_file)
        home = self.root / "home" / login
        home.mkdir(parents=True, exist_ok=True)
        self._chown(home)

    def start(self, timeout: float = 20.0) -> None:
        """Start Dovecot and return once it greets IMAP clients on :attr:`port`.

        Until the first successful start, a port picked by :func:`free_port` that something
        else grabbed in the meantime is replaced by another; after that the port is fixed.
        """
        for attempt in range(3):
            try:
                self._start_once(timeout)
                return
            except _PortTaken:
                if not self._may_move_port or attempt == 2:
                    raise
                self.port = free_port()
                self._write_config()

    def _start_once(self, timeout: float) -> None:
        with self._lock:
            if self.running:
                return
            # -F: stay in the foreground, so the process is ours to wait for and kill; its
            # own session so that stop() can kill every child in the group.
            with open(self._stderr_path, "wb") as stderr:
                self._proc = subprocess.Popen(
                    [self.binary, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,
                )
            _RUNNING.add(self)
        try:
            self._wait_until_greeting(timeout)
        except BaseException:
            self.stop()
            raise
        self._listening = True
        self._may_move_port = False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Dovecot and every process it started; the data stays. Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            # SIGTERM to the whole process group at once: every Dovecot process shuts down
            # cleanly by itself. (SIGTERM to the master alone makes it linger ~1s for its
            # children.) A child that misses the signal (say, forked at that very moment)
            # can keep the master waiting for it up to 6s, so after a short grace period
            # the group is killed: everything a client saw acknowledged is on disk already.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(min(timeout, 2.0))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            # Whatever is left of the group (children that outlived the master).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            _RUNNING.discard(self)
            if self._listening:
                self._listening = False
                self._wait_port_free(timeout)

    def close(self) -> None:
        """Stop Dovecot and delete all its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of Dovecot's log and stderr, for error messages."""
        out: list[str] = []
        for path in (self._stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _chown(self, path: Path, *, group_only: bool = False) -> None:
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(self._internal_user)
        os.chown(path, -1 if group_only else user.pw_uid, user.pw_gid)

    def _write_files(self) -> None:
        root = self.root
        # Dovecot's unprivileged processes must be able to reach the Maildirs under it.
        root.chmod(0o755)
        if os.geteuid() == 0:
            for parent in root.parents:
                if not parent.stat().st_mode & 0o001:
                    raise RuntimeError(
                        f"{parent} is not searchable by others, so Dovecot's processes "
                        f"cannot reach {root}: point TMPDIR somewhere else (e.g. /tmp)"
                    )
        for sub in ("run", "state", "mail", "home", "log"):
            (root / sub).mkdir()
        for sub in ("mail", "home"):
            self._chown(root / sub)
        self._write_config()

    def _write_config(self) -> None:
        root = self.root
        internal = pwd.getpwnam(self._internal_user)
        self.config_path.write_text(
            _CONFIG.format(
                root=root,
                port=self.port,
                internal_user=self._internal_user,
                internal_group=grp.getgrgid(internal.pw_gid).gr_name,
                login_user=self._login_user,
                uid=internal.pw_uid,
                gid=internal.pw_gid,
                instance=self._instance,
            )
        )

    def _wait_until_greeting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: OSError | None = None
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                message = f"dovecot exited (status {code}):\n{self.log_tail()}"
                with contextlib.suppress(OSError):
                    if "Address already in use" in self._stderr_path.read_text(errors="replace"):
                        raise _PortTaken(message)
                raise RuntimeError(message)
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    # Our own greeting: not some other server that holds the port.
                    if self._instance.encode() in sock.recv(256):
                        return
            except OSError as exc:
                last_error = exc
            time.sleep(0.05)  # handing over to another process; nothing else to wait on
        raise TimeoutError(
            f"dovecot did not greet on {self.host}:{self.port} within {timeout}s "
            f"({last_error}):\n{self.log_tail()}"
        )

    def _wait_port_free(self, timeout: float) -> None:
        """Until our Dovecot no longer answers on the port, so that start() can bind it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    greeting = sock.recv(256)
            except OSError:
                return
            if self._instance.encode() not in greeting:
                return  # a closing socket, or somebody else's server: not ours any more
            time.sleep(0.05)  # handing over to another process; nothing else to wait on
        raise TimeoutError(f"port {self.port} still in use {timeout}s after stopping dovecot")


# Based on /work/shared/bench/mailserver.sh (known good), plus an instance name of its own and
# the userdb uid/gid given numerically, so that a non-root run (everything as us) works too.
_CONFIG = """\
# generated by tests/servers.py -- throwaway test instance
instance_name = {instance}
login_greeting = {instance} ready.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log/dovecot.log
info_log_path = {root}/log/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
