"""Test plumbing: throw-away databases and a real quantum-server process."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_ADMIN_URL = os.environ.get("QRP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN_URL = os.environ.get("QRP_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
BACKENDS = [b for b in os.environ.get("QRP_TEST_BACKENDS", "sqlite,postgresql,mariadb").split(",") if b]


@contextmanager
def temporary_database(backend: str) -> Iterator[str]:
    """A new empty database on ``backend``; dropped afterwards. Yields its URL."""
    name = f"qrp_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/{name}.sqlite"
        return
    if backend == "postgresql":
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        url = f"{base}/{name}"
    elif backend == "mariadb":
        admin = create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
        create, drop = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4", f"DROP DATABASE IF EXISTS `{name}`"
        url = f"{MYSQL_ADMIN_URL.rstrip('/')}/{name}?charset=utf8mb4"
    else:
        raise ValueError(backend)
    with admin.connect() as conn:
        conn.execute(text(create))
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(drop))
        admin.dispose()


def uniq(prefix: str) -> str:
    """A name of ``prefix`` no other test uses (tests share one server per module)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A ``twistd -n quantum-server`` child on 127.0.0.1 with a JSON helper."""

    def __init__(
        self,
        db_url: str,
        config_text: str = "",
        state_dir: str | None = None,
        controllers: str = "",
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """``tls``: (key file, certificate file, CA file) to serve HTTPS and trust it in ``request``."""
        self.db_url = db_url
        self.port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory()
        self.state_dir = state_dir or self._tmp.name
        self.config_path = os.path.join(self._tmp.name, "restproxy.ini")
        if "[RESTPROXY]" not in config_text:
            # Store-only unless the test names controllers (e.g. a controller simulator).
            config_text += f"\n[RESTPROXY]\nservers = {controllers}\nserver_timeout = 5\n"
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(self._tmp.name, "server.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ServerProcess:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        args = [
            twistd, "-n", "--pidfile=", "--logfile=-", "quantum-server",
            "--config", self.config_path, "--port", self.listen,
            "--sql-connection", self.db_url, "--state-path", self.state_dir,
        ]  # fmt: skip
        # Logs go to stdout, appended to one file we own: twistd's own log file rotates at 1 MB.
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.request("GET", "/")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    @property
    def listen(self) -> str:
        if self.tls:
            key, cert, _ = self.tls
            return f"ssl:{self.port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        return f"tcp:{self.port}:interface=127.0.0.1"

    def restart(self, kill: bool = False) -> ServerProcess:
        """The same server (port, config, database) again, after a clean stop or a SIGKILL."""
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        return self.start()

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON body or None)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            context = ssl.create_default_context(cafile=self.tls[2]) if self.tls else None
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                payload = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            payload = e.read()
            status = e.code
        return status, (json.loads(payload) if payload else None)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``probe`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
