"""A real Keystone for the tests: its own venv (scripts/bootstrap.sh ``ensure_keystone``), SQLite, gunicorn.

Keystone's pins fight the project's, so it lives in ``$ROOT/.venv-keystone`` (or
``QRP_KEYSTONE_VENV``) and runs as a child process on 127.0.0.1 with a free port:
``keystone-manage db_sync``, ``fernet_setup``, ``credential_setup``, ``bootstrap``, then
``gunicorn keystone.wsgi.api:application``. ``Keystone`` then makes projects, users,
roles, services and endpoints through the REST API, as an operator's ``openstack`` would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from restproxy_testing.support import ROOT, free_port

VENV = os.environ.get("QRP_KEYSTONE_VENV", os.path.join(ROOT, ".venv-keystone"))
ADMIN_PASSWORD = "keystone-admin-" + uuid.uuid4().hex[:8]


def available() -> bool:
    return os.path.exists(os.path.join(VENV, "bin", "keystone-manage")) and os.path.exists(os.path.join(VENV, "bin", "gunicorn"))


CONF = """\
[DEFAULT]
debug = false
[database]
connection = sqlite:///{dir}/keystone.db
[token]
provider = fernet
expiration = {expiration}
[fernet_tokens]
key_repository = {dir}/fernet-keys
max_active_keys = 3
[fernet_receipts]
key_repository = {dir}/fernet-keys
[credential]
key_repository = {dir}/credential-keys
[cache]
enabled = false
[identity]
# the fewest bcrypt rounds: every token request hashes a password, and tests ask for many
password_hash_rounds = 4
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
"""

# keystone.wsgi.api parses sys.argv with oslo.config: it must not see gunicorn's arguments.
APP = """\
import sys
sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
"""


def _wait_group_gone(pgid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


class Keystone:
    """One Keystone child process; ``stop``/``start`` keep its database, keys and port."""

    def __init__(self, token_expiration: int = 3600) -> None:
        self.token_expiration = token_expiration
        if not available():
            raise RuntimeError(f"no keystone venv at {VENV}: run scripts/bootstrap.sh (ensure_keystone)")
        self._tmp = tempfile.TemporaryDirectory(prefix="qrp-keystone-")
        self.dir = self._tmp.name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = os.path.join(self.dir, "keystone.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(dir=self.dir, expiration=token_expiration))
        with open(os.path.join(self.dir, "qrp_keystone_app.py"), "w") as f:
            f.write(APP)
        self.log_path = os.path.join(self.dir, "keystone.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin_token: tuple[str, float] | None = None
        self.ids: dict[str, str] = {}

    def _manage(self, *args: str) -> None:
        manage = os.path.join(VENV, "bin", "keystone-manage")
        with open(self.log_path, "ab") as log:
            subprocess.run([manage, "--config-file", self.conf, *args], check=True, stdout=log, stderr=subprocess.STDOUT, timeout=300)

    def setup(self) -> Keystone:
        """db_sync, keys, bootstrap (admin user, admin project, RegionOne, identity endpoint), then start."""
        self._manage("db_sync")
        user, group = str(os.getuid()), str(os.getgid())
        self._manage("fernet_setup", "--keystone-user", user, "--keystone-group", group)
        self._manage("credential_setup", "--keystone-user", user, "--keystone-group", group)
        self._manage(
            "bootstrap", "--bootstrap-password", ADMIN_PASSWORD, "--bootstrap-region-id", "RegionOne",
            "--bootstrap-admin-url", self.url, "--bootstrap-internal-url", self.url, "--bootstrap-public-url", self.url,
        )  # fmt: skip
        return self.start()

    def start(self, timeout: float = 90) -> Keystone:
        env = dict(os.environ, OS_KEYSTONE_CONFIG_FILES=self.conf, PATH=os.path.join(VENV, "bin") + os.pathsep + os.environ["PATH"])
        env.pop("PYTHONPATH", None)
        args = [
            os.path.join(VENV, "bin", "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "4",
            "--timeout", "60", "--keep-alive", "75", "--no-control-socket", "--chdir", self.dir, "qrp_keystone_app:application",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            # its own process group: a stop reaches gunicorn's worker too (a killed master leaves it serving a while)
            self.proc = subprocess.Popen(
                args, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"keystone exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                status, _, _ = self.request("GET", "/v3")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"keystone did not start:\n{self.log()[-4000:]}")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL: gone at once, as a crashed Keystone) and wait."""
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
            if kill:
                _wait_group_gone(self.proc.pid)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- REST ---------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload, status, hdrs = resp.read(), resp.status, resp.headers
        except urllib.error.HTTPError as e:
            payload, status, hdrs = e.read(), e.code, e.headers
        return status, (json.loads(payload) if payload else None), hdrs

    def token(self, user: str, password: str, project: str | None = None, domain: str = "Default") -> str:
        """A token for ``user`` scoped to ``project`` (by name, in the Default domain)."""
        auth: dict[str, Any] = {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": domain}, "password": password}}}
        }
        if project:
            auth["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
        status, body, headers = self.request("POST", "/v3/auth/tokens", {"auth": auth})
        if status != 201:
            raise RuntimeError(f"token for {user}: {status} {body}")
        return str(headers["X-Subject-Token"])

    def admin_token(self) -> str:
        if self._admin_token is None or self._admin_token[1] < time.monotonic():
            self._admin_token = (self.token("admin", ADMIN_PASSWORD, "admin"), time.monotonic() + self.token_expiration / 3)
        return self._admin_token[0]

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, reply, _ = self.request(method, path, body, {"X-Auth-Token": self.admin_token()})
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {reply}")
        return reply

    def role_id(self, name: str) -> str:
        found = self.admin("GET", f"/v3/roles?name={name}")["roles"]
        if found:
            return str(found[0]["id"])
        return str(self.admin("POST", "/v3/roles", {"role": {"name": name}})["role"]["id"])

    def project(self, name: str) -> str:
        """The id of project ``name`` (Default domain), made if new."""
        found = self.admin("GET", f"/v3/projects?name={name}")["projects"]
        if found:
            return str(found[0]["id"])
        return str(self.admin("POST", "/v3/projects", {"project": {"name": name, "domain_id": "default"}})["project"]["id"])

    def user(self, name: str, password: str, project: str, roles: tuple[str, ...] = ("member",)) -> str:
        """A user with ``roles`` on ``project`` (both made if new); returns the user id."""
        project_id = self.project(project)
        found = self.admin("GET", f"/v3/users?name={name}")["users"]
        if found:
            user_id = str(found[0]["id"])
        else:
            made = self.admin("POST", "/v3/users", {"user": {"name": name, "password": password, "domain_id": "default"}})
            user_id = str(made["user"]["id"])
        for role in roles:
            self.admin("PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")
        return user_id

    def revoke(self, token: str) -> None:
        status, body, _ = self.request("DELETE", "/v3/auth/tokens", headers={"X-Auth-Token": self.admin_token(), "X-Subject-Token": token})
        if status != 204:
            raise RuntimeError(f"revoke: {status} {body}")

    def endpoint(self, service_type: str, name: str, url: str, interfaces: tuple[str, ...] = ("public", "internal", "admin")) -> str:
        """``openstack service create`` and ``openstack endpoint create`` (RegionOne) for each interface; returns the service id.

        A service of the same type made before is deleted first (with its endpoints): one per type in the catalog.
        """
        for old in self.admin("GET", f"/v3/services?type={service_type}")["services"]:
            self.admin("DELETE", f"/v3/services/{old['id']}")
        service = self.admin("POST", "/v3/services", {"service": {"type": service_type, "name": name, "enabled": True}})["service"]
        for interface in interfaces:
            self.admin(
                "POST", "/v3/endpoints",
                {"endpoint": {"service_id": service["id"], "interface": interface, "url": url, "region_id": "RegionOne", "enabled": True}},
            )  # fmt: skip
        return str(service["id"])
