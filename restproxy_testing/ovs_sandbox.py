"""A private Open vSwitch for tests: ovsdb-server + ovs-vswitchd (userspace datapath) in a temp run dir.

``OvsSandbox`` starts both daemons as plain child processes (no ``--detach``) with
their own database file, unix socket, pid files and logs under one temporary
directory, so several test runs never share state with each other or with a
system OVS. Bridges must use ``datapath_type=netdev``: there is no kernel
module here. ``stop()`` leaves nothing behind: bridges are deleted first (the
netdev datapath otherwise leaves its ``br-*``/``ovs-netdev`` TAPs in the
kernel), then the daemons are stopped and reaped, then the namespaces and
devices the tests registered are removed and the run dir is deleted.

``NetnsVm`` is a network namespace playing a VM: set an IP, ping, and a TCP
round trip through ``ip netns exec`` (tests may shell out; the product code
may not).

Nothing here installs anything: ``ovs_unavailable`` says why a sandbox cannot run
(Open vSwitch missing, not root). Installing is the bootstrap's job
(``scripts/bootstrap.sh``, which ``run-demo.sh`` runs) or the test suite's
(``tests/ovs_sandbox.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
# The userspace datapath's TAP is called ovs-netdev on every instance: two sandboxes' ovs-vswitchd on one host
# fight over it (ports stay without an ofport, one's cleanup deletes the other's). So sandboxes take turns.
HOST_LOCK = "/run/lock/qrp-ovs-sandbox.lock"
OVS_PACKAGES = ["openvswitch-switch", "iproute2", "iputils-ping", "ethtool"]  # what provides _BINARIES on Debian
_BINARIES = ["ovsdb-server", "ovsdb-tool", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl", "ip", "ping"]

# A tiny TCP echo server and client, run inside the namespaces with `ip netns exec`.
_TCP_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(float(sys.argv[3]))
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(float(sys.argv[3]))
n = int(sys.argv[4]); buf = b""
while len(buf) < n:
    chunk = c.recv(65536)
    if not chunk:
        break
    buf += chunk
c.sendall(buf[::-1]); c.close()
"""
_TCP_CLIENT = """
import socket, sys
n = int(sys.argv[4]); payload = bytes(i % 251 for i in range(n))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(payload); buf = b""
while len(buf) < n:
    chunk = c.recv(65536)
    if not chunk:
        break
    buf += chunk
sys.exit(0 if buf == payload[::-1] else 3)
"""


def missing_binaries() -> list[str]:
    return [b for b in _BINARIES if shutil.which(b) is None]


def ovs_unavailable(what: str = "the OVS sandbox") -> str | None:
    """Why a sandbox cannot run here (Open vSwitch not installed, not root), or None."""
    missing = missing_binaries()
    if missing:
        return f"Open vSwitch is not installed ({', '.join(missing)} missing; Debian: apt-get install {' '.join(OVS_PACKAGES)})"
    if os.geteuid() != 0:
        return f"{what} needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for network namespaces)"
    return None


def _run(argv: list[str], timeout: float = 30, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} -> {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def other_vswitchd_running() -> bool:
    """Whether any (non-zombie) ovs-vswitchd runs on this host, e.g. another test run's sandbox."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name, state = stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :][:1]
        if name == "ovs-vswitchd" and state != "Z":
            return True
    return False


def delete_netns(name: str) -> None:
    if netns_exists(name):
        _run(["ip", "netns", "delete", name], check=False)


def delete_link(name: str) -> None:
    if link_exists(name):
        _run(["ip", "link", "del", name], check=False)


class NetnsVm:
    """A network namespace standing in for a VM whose NIC is ``ifname``."""

    def __init__(self, name: str, ifname: str) -> None:
        self.name, self.ifname = name, ifname

    def exec(self, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.name, *argv], timeout=timeout, check=check)

    def set_ip(self, cidr: str) -> None:
        self.exec("ip", "link", "set", "lo", "up")
        self.exec("ip", "addr", "replace", cidr, "dev", self.ifname)
        self.exec("ip", "link", "set", self.ifname, "up")

    def tx_offload_off(self) -> None:
        """The shell way (facts §5) to do what ``Links.create_veth_into_netns(tx_offload=False)`` does."""
        self.exec("ethtool", "-K", self.ifname, "tx", "off")

    def tx_checksum_on(self) -> bool:
        out = self.exec("ethtool", "-k", self.ifname).stdout
        return any(line.strip() == "tx-checksumming: on" for line in out.splitlines())

    def mac(self) -> str:
        return self.exec("cat", f"/sys/class/net/{self.ifname}/address").stdout.strip()

    def mtu(self) -> int:
        return int(self.exec("cat", f"/sys/class/net/{self.ifname}/mtu").stdout.strip())

    def ping(self, ip: str, count: int = 2, wait: float = 1.0) -> bool:
        r = self.exec("ping", "-n", "-c", str(count), "-W", str(wait), "-i", "0.2", ip, check=False, timeout=count * wait + 10)
        return r.returncode == 0

    def ping_until(self, ip: str, deadline: float = 10.0) -> bool:
        """Ping until one reply comes back (ARP and MAC learning settle) or the deadline passes."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.ping(ip, count=1, wait=1.0):
                return True
        return False

    def tcp_roundtrip(self, server: NetnsVm, server_ip: str, nbytes: int = 18000, timeout: float = 5.0, port: int | None = None) -> bool:
        """Send ``nbytes`` over TCP to an echo server in ``server``'s namespace (on ``port``, else a random one); True if
        they came back intact."""
        port = port or 20000 + (uuid.uuid4().int % 20000)
        argv = ["ip", "netns", "exec", server.name, sys.executable, "-c", _TCP_SERVER, server_ip, str(port), str(timeout), str(nbytes)]
        srv = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert srv.stdout is not None
            if srv.stdout.readline().strip() != "listening":
                return False
            client = ["ip", "netns", "exec", self.name, sys.executable, "-c", _TCP_CLIENT, server_ip, str(port), str(timeout), str(nbytes)]
            r = subprocess.run(client, capture_output=True, text=True, timeout=timeout + 10)
            return r.returncode == 0
        finally:
            srv.kill()
            srv.wait()


class OvsSandbox:
    """ovsdb-server + ovs-vswitchd in a private run dir, as child processes."""

    def __init__(self, tag: str | None = None, lock_timeout: float = 3600.0) -> None:
        self.tag = tag or uuid.uuid4().hex[:6]
        self.lock_timeout = lock_timeout
        self._lock: int | None = None
        self.run_dir = tempfile.mkdtemp(prefix=f"ovs-{self.tag}-", dir="/tmp")
        self.db_path = os.path.join(self.run_dir, "conf.db")
        self.sock_path = os.path.join(self.run_dir, "db.sock")
        self.endpoint = f"unix:{self.sock_path}"
        self.env = dict(os.environ, OVS_RUNDIR=self.run_dir, OVS_LOGDIR=self.run_dir, OVS_DBDIR=self.run_dir, OVS_SYSCONFDIR=self.run_dir)
        self.ovsdb: subprocess.Popen | None = None
        self.vswitchd: subprocess.Popen | None = None
        self._netns: list[str] = []
        self._links: list[str] = []
        self._devices: list[str] = []
        self._netdev_tap_preexisted = False
        self._links_before: set[str] = set()

    # -- daemons -------------------------------------------------------------------------------------------------
    def _take_host_lock(self) -> None:
        os.makedirs(os.path.dirname(HOST_LOCK), exist_ok=True)
        fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        end, told = time.monotonic() + self.lock_timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    print(f"[ovs_sandbox] waiting for {HOST_LOCK}: another OVS sandbox runs on this host", file=sys.stderr)
                    told = True
                if time.monotonic() > end:
                    os.close(fd)
                    raise RuntimeError(f"another OVS sandbox has held {HOST_LOCK} for {self.lock_timeout:.0f}s") from None
                time.sleep(0.2)
        self._lock = fd

    def _release_host_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def start(self) -> OvsSandbox:
        self._take_host_lock()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if link_exists("ovs-netdev") and not other_vswitchd_running():
            delete_link("ovs-netdev")  # left by a crashed run; ours will make its own
        self._netdev_tap_preexisted = link_exists("ovs-netdev")
        self._links_before = set(os.listdir("/sys/class/net"))
        _run(["ovsdb-tool", "create", self.db_path, OVS_SCHEMA])
        self._start_ovsdb()
        self.vsctl("--no-wait", "init")
        self._start_vswitchd()

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(os.path.join(self.run_dir, log), "ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.run_dir, start_new_session=True)

    def _start_ovsdb(self) -> None:
        argv = [
            "ovsdb-server",
            self.db_path,
            f"--remote=punix:{self.sock_path}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--pidfile={self.run_dir}/ovsdb-server.pid",
            f"--unixctl={self.run_dir}/ovsdb-server.ctl",
            f"--log-file={self.run_dir}/ovsdb-server.log",
            "-vconsole:off",
        ]
        self.ovsdb = self._spawn(argv, "ovsdb-server.out")
        self._wait(lambda: self._can_connect(self.sock_path), "ovsdb-server socket", self.ovsdb)

    def _start_vswitchd(self) -> None:
        argv = [
            "ovs-vswitchd",
            self.endpoint,
            f"--pidfile={self.run_dir}/ovs-vswitchd.pid",
            f"--unixctl={self.run_dir}/ovs-vswitchd.ctl",
            f"--log-file={self.run_dir}/ovs-vswitchd.log",
            "-vconsole:off",
        ]
        self.vswitchd = self._spawn(argv, "ovs-vswitchd.out")
        ctl = os.path.join(self.run_dir, "ovs-vswitchd.ctl")
        self._wait(lambda: self._can_connect(ctl), "ovs-vswitchd control socket", self.vswitchd)
        # Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the configuration (cur_cfg).
        self.vsctl("--timeout=20", "set", "Open_vSwitch", ".", f"external_ids:sandbox={self.tag}")

    @staticmethod
    def _can_connect(path: str) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return True
            except OSError:
                return False

    def _wait(self, cond, what: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: process exited with {proc.returncode}; see {self.run_dir}")
            time.sleep(0.02)
        raise RuntimeError(f"timed out waiting for {what}; see {self.run_dir}")

    @staticmethod
    def _kill(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill_ovsdb(self, hard: bool = True) -> None:
        """Stop ovsdb-server (SIGKILL by default: a crash); ``start_ovsdb()`` brings it back on the same db and socket."""
        self._kill(self.ovsdb, signal.SIGKILL if hard else signal.SIGTERM)
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)

    def start_ovsdb(self) -> None:
        if self.ovsdb is None or self.ovsdb.poll() is not None:
            self._start_ovsdb()

    def offline_transact(self, *ops: dict) -> list:
        """Change the database file directly with ovsdb-tool while ovsdb-server is down (what a client can't see)."""
        assert self.ovsdb is None or self.ovsdb.poll() is not None, "ovsdb-server is running"
        out = _run(["ovsdb-tool", "transact", self.db_path, json.dumps(["Open_vSwitch", *ops])]).stdout
        result = json.loads(out)
        if any(isinstance(r, dict) and "error" in r for r in result):
            raise RuntimeError(f"ovsdb-tool transact: {result}")
        return result

    def restart_ovsdb(self, hard: bool = True) -> None:
        """Kill ovsdb-server and start it again on the same db file and socket."""
        self.kill_ovsdb(hard)
        self._start_ovsdb()

    def restart_vswitchd(self) -> None:
        """Stop ovs-vswitchd (it leaves ports and OVS rows in place) and start it again."""
        self._kill(self.vswitchd)
        self._start_vswitchd()

    # -- helpers for tests ---------------------------------------------------------------------------------------
    def vsctl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        return _run(["ovs-vsctl", f"--db={self.endpoint}", *args], check=check, timeout=timeout, env=self.env).stdout.strip()

    def appctl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        argv = ["ovs-appctl", "-t", f"{self.run_dir}/ovs-vswitchd.ctl", *args]
        return _run(argv, check=check, env=self.env, timeout=timeout).stdout.strip()

    def netns_name(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def netns_vm(self, name: str, ifname: str) -> NetnsVm:
        """A NetnsVm for namespace ``name`` (see ``netns_name``), removed by ``stop()``."""
        self.track_netns(name)
        return NetnsVm(name, ifname)

    def track_netns(self, name: str) -> None:
        if name not in self._netns:
            self._netns.append(name)

    def track_link(self, name: str) -> None:
        if name not in self._links:
            self._links.append(name)

    def stop(self) -> None:
        """Stop everything this sandbox started or was told about; nothing is left behind."""
        bridges: list[str] = []
        ifaces: list[str] = []
        try:
            if self.ovsdb is not None and self.ovsdb.poll() is None:
                bridges = self.vsctl("list-br", check=False, timeout=10).split()
                ifaces = self.vsctl("--bare", "--columns=name", "list", "Interface", check=False, timeout=10).split()
                if self.vswitchd is not None and self.vswitchd.poll() is None:
                    for br in bridges:
                        self.vsctl("--timeout=20", "--if-exists", "del-br", br, check=False)
                    self.appctl("exit", "--cleanup", check=False)
        except (OSError, subprocess.SubprocessError):
            pass  # the daemons are killed below anyway
        self._kill(self.vswitchd)
        self._kill(self.ovsdb)
        for ns in self._netns:
            delete_netns(ns)
        # Devices named like our Interface rows (the host ends the tests plugged), but never one that predates us.
        devices = self._links + [i for i in ifaces + bridges if i not in self._links_before]
        # The netdev datapath's TAP has one global name: leave it to any other ovs-vswitchd still running.
        if not self._netdev_tap_preexisted and not other_vswitchd_running():
            devices.append("ovs-netdev")
        for name in devices:
            delete_link(name)
        self._devices = devices
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._release_host_lock()

    def leftovers(self) -> list[str]:
        """What ``stop()`` should have removed but is still there (for tests of the sandbox itself)."""
        out = [p for p in (self.ovsdb, self.vswitchd) if p is not None and p.poll() is None]
        out += [f"netns {n}" for n in self._netns if netns_exists(n)]
        out += [f"link {n}" for n in dict.fromkeys(self._links + self._devices) if link_exists(n)]
        if os.path.exists(self.run_dir):
            out.append(self.run_dir)
        return [str(o) for o in out]
