"""A flow's cookie names its content (``encode.cookie``): a restarted agent keeps (adopts) the flows on the switch
whose cookie a wanted flow has, and remove_stale keeps them too. So a cookie must mean the same wire flow in every
process (no hash seed in it) and in every release: a release whose encoder sends another wire form for the same
``Flow`` value must bump ``encode.ENCODING``, or it would keep the older release's flows as they were, for good."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from restproxy_agent.firewall import encode
from restproxy_agent.firewall.flows import Flow

# One flow of each kind the compiler makes (match fields and their value forms, actions), literal.
FLOWS = [
    Flow(0, 100, (("in_port", 33000),), (("set", "reg5", 33000), ("set", "reg6", 5), ("goto", 71))),
    Flow(
        71,
        95,
        (("arp_sha", "fa:16:3e:00:00:01"), ("arp_spa", "10.0.0.5"), ("eth_src", "fa:16:3e:00:00:01"), ("eth_type", 2054), ("reg5", 33000)),
        (("goto", 73),),
    ),
    Flow(71, 65, (("eth_src", "fa:16:3e:00:00:01"), ("eth_type", 2048), ("ipv4_src", "10.0.0.5"), ("reg5", 33000)), (("ct", False, 72),)),
    Flow(
        71, 65, (("eth_src", "fa:16:3e:00:00:01"), ("eth_type", 34525), ("ipv6_src", "2001:db8::5"), ("reg5", 33000)), (("ct", False, 72),)
    ),
    Flow(
        71,
        95,
        (
            ("eth_src", "fa:16:3e:00:00:01"),
            ("eth_type", 34525),
            ("icmpv6_type", 136),
            ("ip_proto", 58),
            ("ipv6_nd_target", "2001:db8::5"),
            ("reg5", 33000),
        ),
        (("goto", 73),),
    ),
    Flow(
        71,
        95,
        (
            ("arp_sha", "fa:16:3e:00:00:02"),
            ("arp_spa", ("10.1.0.0", "255.255.255.0")),
            ("eth_src", "fa:16:3e:00:00:02"),
            ("eth_type", 2054),
            ("reg5", 33000),
        ),
        (("goto", 73),),
    ),
    Flow(
        71,
        65,
        (("eth_src", "fa:16:3e:00:00:02"), ("eth_type", 2048), ("ipv4_src", ("10.1.0.0", "255.255.255.0")), ("reg5", 33000)),
        (("ct", False, 72),),
    ),
    Flow(71, 96, (("eth_src", "fa:16:3e:00:00:01"), ("reg5", 33000)), (("conj", 4294967295, 1, 2),)),
    Flow(73, 100, (("eth_dst", "fa:16:3e:00:00:01"), ("reg6", 5)), (("set", "reg5", 33000), ("goto", 81))),
    Flow(
        82,
        60,
        (("ct_state", (33, 55)), ("eth_type", 2048), ("ip_proto", 6), ("reg5", 33000), ("tcp_dst", (22, 65534))),
        (("conj", 1716019131, 2, 2),),
    ),
    Flow(
        82,
        60,
        (("ct_state", (33, 55)), ("eth_type", 2048), ("ip_proto", 6), ("reg5", 33000), ("tcp_dst", 80)),
        (("conj", 1716019131, 2, 2),),
    ),
    Flow(
        72,
        70,
        (("ct_state", (33, 55)), ("eth_type", 34525), ("ipv6_dst", ("2001:db8::", "ffff:ffff:ffff:ffff::")), ("reg5", 33000)),
        (("ct", True, None), ("goto", 73)),
    ),
    Flow(
        82,
        70,
        (("ct_state", (33, 55)), ("eth_type", 2048), ("icmpv4_code", 0), ("icmpv4_type", 8), ("ip_proto", 1), ("reg5", 33000)),
        (("ct", True, None), ("output", 33000)),
    ),
    Flow(0, 0, (), ()),
    Flow(0, 200, (("vlan_vid", (8191, 8191)),), ()),
    Flow(0, 50, (("in_port", 4294967294),), (("normal",),)),
    Flow(71, 96, (("eth_type", 34525), ("icmpv6_type", 133), ("ip_proto", 58)), (("conj", 4294967295, 2, 2),)),
    Flow(71, 96, (("eth_type", 2048), ("ip_proto", 17), ("udp_dst", 67), ("udp_src", 68)), (("conj", 4294967295, 2, 2),)),
    Flow(71, 96, (("conj_id", 4294967295),), (("goto", 73),)),
    Flow(71, 90, (("eth_type", 2048), ("ip_proto", 17), ("udp_src", 67)), ()),
    Flow(71, 90, (("eth_type", 34525), ("icmpv6_type", 134), ("ip_proto", 58)), ()),
    Flow(72, 100, (("ct_state", (48, 48)),), ()),
    Flow(72, 90, (("ct_state", (34, 55)),), (("goto", 73),)),
    Flow(73, 0, (), (("normal",),)),
    Flow(81, 100, (("eth_type", 2054),), (("output_reg5",),)),
    Flow(81, 100, (("eth_type", 34525), ("icmpv6_type", 130), ("ip_proto", 58)), (("output_reg5",),)),
    Flow(81, 95, (("eth_type", 2048), ("ip_proto", 17), ("udp_dst", 68), ("udp_src", 67)), (("output_reg5",),)),
    Flow(81, 90, (("eth_type", 2048),), (("ct", False, 82),)),
    Flow(82, 90, (("ct_state", (34, 55)),), (("output_reg5",),)),
    Flow(82, 60, (("ct_state", (33, 55)), ("eth_type", 2048), ("ipv4_src", "10.0.0.5"), ("reg6", 5)), (("conj", 1716019131, 1, 2),)),
    Flow(82, 60, (("conj_id", 7), ("eth_type", 2048)), (("ct", True, None), ("output_reg5",))),
]
# The wire form of FLOWS under ENCODING 1. Changed by an encoder change: bump ENCODING, then pin the new digest.
WIRE = {1: "84b539fecc691bc4df55393adfc78444"}


def wire_digest() -> str:
    return hashlib.blake2b(b"".join(encode.add(f, 0).body for f in FLOWS), digest_size=16).hexdigest()


def test_the_wire_form_of_each_kind_of_flow_is_what_its_encoding_number_says() -> None:
    assert WIRE.get(encode.ENCODING) == wire_digest(), "the encoder's wire form changed: bump encode.ENCODING and pin it"


def test_cookies_are_the_same_in_every_process() -> None:
    code = "from tests.fast.test_flow_cookies import FLOWS, encode; print([encode.cookie(f) for f in FLOWS])"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    here = [encode.cookie(f) for f in FLOWS]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, cwd=root, env=env)
        assert out.stdout.strip() == str(here)
    assert len(set(here)) == len(FLOWS) and all(0 < c < 1 << 63 for c in here)
