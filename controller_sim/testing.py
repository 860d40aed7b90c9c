"""``SimProcess``: a simulator child process for tests, the demo and benchmarks.

It runs ``python -m controller_sim`` on 127.0.0.1, on a port the child picks itself (port 0,
reported as "listening on PORT", so two test runs never race for a port), waits until the
admin API answers, and offers small synchronous helpers built on urllib::

    with SimProcess("--profile", "floodlight") as sim:
        sim.controller("PUT", "tenants/t/networks/n", {"network": {"name": "n"}})
        assert sim.admin("GET", "/_sim/state")["counts"]["networks"] == 1

``restart()`` keeps the port, as a real controller that comes back on its address; by
default it starts "forgotten" (``--start-forgotten``), i.e. empty and, in the default
``conflict`` mode, asking for a ``/topology`` re-sync.
"""

from __future__ import annotations

import json
import os
import select
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from base64 import b64encode
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from controller_sim import ADMIN_PREFIX, BASE_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SimAdminError(RuntimeError):
    """A ``/_sim/`` call answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"admin call failed with {status}: {body}")
        self.status = status
        self.body = body


def _escape(value: str) -> str:
    """Escape a value for a Twisted endpoint string."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class SimProcess:
    """One simulator process; ``args`` are command-line options (``--profile``, ``--auth``...)."""

    def __init__(
        self,
        *args: str,
        profile: str | None = None,
        auth: str | tuple[str, str] | None = None,
        capabilities: Sequence[str] | str | None = None,
        forget_mode: str | None = None,
        latency_ms: float | None = None,
        tls_key: str | None = None,
        tls_cert: str | None = None,
        cafile: str | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
    ) -> None:
        """``args`` are passed as they are; the keywords are shorthands for the same options."""
        if (tls_key is None) != (tls_cert is None):
            raise ValueError("give both tls_key and tls_cert, or neither")
        self.args = list(args)
        if profile is not None:
            self.args += ["--profile", profile]
        if auth is not None:
            self.args += ["--auth", auth if isinstance(auth, str) else f"{auth[0]}:{auth[1]}"]
        if capabilities is not None:
            self.args += ["--capabilities", capabilities if isinstance(capabilities, str) else ",".join(capabilities)]
        if forget_mode is not None:
            self.args += ["--forget-mode", forget_mode]
        if latency_ms is not None:
            self.args += ["--latency-ms", str(latency_ms)]
        self.host = host
        self.tls = (tls_key, tls_cert) if tls_key and tls_cert else None
        self.cafile = cafile
        self.env = env
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="controller-sim-")
        self._cleanup = weakref.finalize(self, self._tmp.cleanup)
        self.log_path = os.path.join(self._tmp.name, "sim.log")
        self._log_file: IO[bytes] | None = None

    # -- addresses ----------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT`` (no path)."""
        if self.port is None:
            raise RuntimeError("the simulator has not been started")
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The controller API's base URL, ``.../networkService/v1.1``."""
        return self.url + BASE_PATH

    @property
    def address(self) -> str:
        """``host:port``, as the plugin's ``servers`` option wants it."""
        if self.port is None:
            raise RuntimeError("the simulator has not been started")
        return f"{self.host}:{self.port}"

    server = address

    def endpoint(self, port: int) -> str:
        if self.tls:
            key, cert = self.tls
            return f"ssl:{port}:interface={_escape(self.host)}:privateKey={_escape(key)}:certKey={_escape(cert)}"
        return f"tcp:{port}:interface={_escape(self.host)}"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30, extra_args: Sequence[str] = ()) -> SimProcess:
        """Start the child (on the port of a previous run, if any) and wait until it answers."""
        if self.running:
            raise RuntimeError("already running")
        cmd = [sys.executable, "-m", "controller_sim", "--port", self.endpoint(self.port or 0), *self.args, *extra_args]
        self._log_file = open(self.log_path, "ab")  # kept open for the child's lifetime
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log_file, env=self.env)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                self._fail_start("did not report its port")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    self._fail_start("closed its stdout")
                line += chunk
        text = line.decode().strip()
        if not text.startswith("listening on "):
            self._fail_start(f"printed {text!r}")
        self.port = int(text.split()[-1])
        while True:
            try:
                self.admin("GET", "/_sim/stats", timeout=2)
                return self
            except (OSError, SimAdminError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self._fail_start("does not answer")
                time.sleep(0.05)

    def _fail_start(self, why: str) -> NoReturn:
        self.kill()
        raise RuntimeError(f"controller simulator {why}:\n{self.log()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _end(self, sig: signal.Signals, wait: float) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """SIGTERM, and wait (SIGKILL after 10 s)."""
        self._end(signal.SIGTERM, 10)

    def kill(self) -> None:
        """SIGKILL: a controller that dies on the spot."""
        self._end(signal.SIGKILL, 10)

    def restart(self, kill: bool = False, forgotten: bool = True, timeout: float = 30) -> SimProcess:
        """Stop (or kill) and start again on the same port; state is gone either way."""
        (self.kill if kill else self.stop)()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()), extra_args=["--start-forgotten"] if forgotten else [])
            except RuntimeError:
                # The old socket may take a moment to be released.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self.stop()
        self._cleanup()

    def __enter__(self) -> SimProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- HTTP helpers ---------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        if self.cafile:
            return ssl.create_default_context(cafile=self.cafile)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        """One request to ``path`` (absolute); returns (status, JSON body, or text, or None)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        if data is not None and not req.has_header("Content-type"):
            req.add_header("Content-Type", "application/json")
        if auth is not None:
            req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        if not payload:
            return status, None
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode("utf-8", "replace")

    def controller(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        """A request relative to the base path: ``controller("GET", "health")``."""
        return self.request(method, f"{BASE_PATH}/{path.lstrip('/')}", body, **kwargs)

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        """A ``/_sim/`` call; returns its JSON, raises :class:`SimAdminError` on an error status.
        ``path`` may be given with or without the ``/_sim/`` prefix."""
        if not path.startswith(ADMIN_PREFIX):
            path = f"{ADMIN_PREFIX}/{path.lstrip('/')}"
        status, payload = self.request(method, path, body, timeout=timeout)
        if status >= 400:
            raise SimAdminError(status, payload)
        return payload

    # -- conveniences ---------------------------------------------------------------------------

    def state(self, raw: bool = False) -> Any:
        return self.admin("GET", "/_sim/state?raw=1" if raw else "/_sim/state")

    def stats(self) -> Any:
        return self.admin("GET", "/_sim/stats")

    def requests(self, since: int = 0, bodies: bool = False) -> list[dict[str, Any]]:
        return self.admin("GET", f"/_sim/requests?since={since}&bodies={int(bodies)}")["requests"]

    def fault(self, **rule: Any) -> dict[str, Any]:
        """Arm a fault rule: ``sim.fault(status=500, count=2)``."""
        return self.admin("POST", "/_sim/faults", rule)["fault"]

    def clear_faults(self) -> None:
        self.admin("DELETE", "/_sim/faults")

    def forget(self, mode: str | None = None) -> Any:
        return self.admin("POST", "/_sim/forget", {"mode": mode} if mode else None)
