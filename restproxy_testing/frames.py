"""Raw Ethernet frames for the security-group tests: built here, sent and counted inside netns "VMs" over AF_PACKET.

``udp_frame``/``arp_reply`` build frames byte for byte (correct IPv4 and UDP checksums: the userspace datapath's
conntrack marks a bad checksum invalid, which would make a "dropped" result mean nothing). ``Sniffer`` counts, in
a VM, the frames that carry a marker; ``send_frames`` makes a VM send frames (once, or in a loop for a while).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

from restproxy_testing.ovs_sandbox import NetnsVm

_SNIFF = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0)); s.settimeout(0.2)
markers = [bytes.fromhex(m) for m in sys.argv[3].split(",")]
counts = [0] * len(markers)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    for i, m in enumerate(markers):
        if m in data:
            counts[i] += 1
print(",".join(map(str, counts)), flush=True)
"""

_SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frames = [bytes.fromhex(f) for f in sys.argv[4].split(",")]
end, interval, sent = time.monotonic() + float(sys.argv[2]), float(sys.argv[3]), 0
while True:
    for f in frames:
        s.send(f); sent += 1
    if time.monotonic() >= end:
        break
    time.sleep(interval)
print(sent, flush=True)
"""


def _mac(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes, sport: int = 40000, dport: int = 40001) -> bytes:
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, udp_len, csum) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0x1234, 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + header + udp


def arp_reply(src_mac: str, claimed_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    """An ARP reply saying ``claimed_ip`` is at ``src_mac`` (sha/spa), to ``dst_mac``."""
    body = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, _mac(src_mac), socket.inet_aton(claimed_ip), _mac(dst_mac), socket.inet_aton(dst_ip)
    )
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x06" + body


def arp_marker(src_mac: str, claimed_ip: str) -> bytes:
    return _mac(src_mac) + socket.inet_aton(claimed_ip)


class Sniffer:
    """Counts, inside ``vm``, the received frames containing each marker, for ``seconds``."""

    def __init__(self, vm: NetnsVm, markers: list[bytes], seconds: float) -> None:
        argv = ["ip", "netns", "exec", vm.name, sys.executable, "-c", _SNIFF, vm.ifname, str(seconds), ",".join(m.hex() for m in markers)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"sniffer did not start: {line} {self.proc.stderr.read() if self.proc.stderr else ''}")

    def counts(self, timeout: float = 60.0) -> list[int]:
        out, err = self.proc.communicate(timeout=timeout)
        return [int(x) for x in out.strip().split(",")]


def send_frames(vm: NetnsVm, frames: list[bytes], seconds: float = 0.0, interval: float = 0.01, wait: bool = True) -> subprocess.Popen:
    """``vm`` sends ``frames`` once (``seconds`` 0) or every ``interval`` for ``seconds``."""
    argv = [
        "ip",
        "netns",
        "exec",
        vm.name,
        sys.executable,
        "-c",
        _SEND,
        vm.ifname,
        str(seconds),
        str(interval),
        ",".join(f.hex() for f in frames),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        proc.communicate(timeout=seconds + 30)
    return proc


def settle(seconds: float = 0.3) -> None:
    time.sleep(seconds)
