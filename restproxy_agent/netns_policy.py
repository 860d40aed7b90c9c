"""Which network namespaces the agent may plug a VIF into.

The namespace comes from the port's ``binding:profile`` ``netns``, i.e. from
whoever may set that attribute, and the agent acts on it as root. So it is
checked before anything is created, in two steps:

- by name (``check_name``, no I/O): 1-64 characters of ``[A-Za-z0-9_.-]``,
  starting with a letter, digit or ``_`` (so never ``.``, ``..``, ``-x``, and
  never a path: no ``/``), and matching none of the glob patterns of
  ``[AGENT] netns_deny`` (by default the namespaces of Neutron's own agents:
  ``qdhcp-*, qrouter-*, snat-*, fip-*``);
- by content, when the namespace already exists (``links``, in its thread):
  it must not be the host's own namespace (the agent's or PID 1's, e.g. bound
  to a name with ``ip netns attach NAME 1``), and it may hold only ``lo`` and
  the VIF ends (``tpi...``) of the same VM's ports (same ``device_id``). A
  namespace with anything else in it belongs to something else on the host (a
  router, a DHCP server, an operator's tool) or to another VM, and its name is
  no proof of ownership. An empty namespace made by a container runtime for
  the VIF is fine.

A refused port is not plugged (a VIF already there is unplugged), is reported
DOWN, and gets one ERROR line with the port id and the reason; it is not
retried until the port changes or the agent reconciles.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Iterable, Sequence

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
DEFAULT_DENY = ("qdhcp-*", "qrouter-*", "snat-*", "fip-*")
OUR_DEVICE_PREFIX = "tpi"  # links.peer_name(): the VM end of our veths


class NetnsRefused(Exception):
    """The agent will not plug into this namespace; the message says why."""

    def __init__(self, namespace: str, reason: str) -> None:
        super().__init__(f"netns {namespace!r} refused: {reason}")
        self.namespace, self.reason = namespace, reason


def check_name(namespace: object, deny: Sequence[str] = DEFAULT_DENY) -> None:
    """Raise ``NetnsRefused`` unless ``namespace`` is a safe name outside the deny list."""
    if not isinstance(namespace, str):
        raise NetnsRefused(repr(namespace), "not a string")
    if not NAME.fullmatch(namespace):
        raise NetnsRefused(namespace, "names are 1-64 characters of A-Z a-z 0-9 _ . - (not starting with . or -)")
    for pattern in deny:
        if fnmatch.fnmatchcase(namespace, pattern):
            raise NetnsRefused(namespace, f"matches [AGENT] netns_deny pattern {pattern!r}")


def check_contents(namespace: str, devices: Iterable[str], ours: Collection[str] | None = None) -> None:
    """Raise ``NetnsRefused`` if an existing namespace holds devices other than ``lo`` and our VIF ends.

    ``ours``: the VIF ends allowed there (the same VM's); None: any of ours (``tpi...``).
    """
    if ours is None:
        foreign = sorted(d for d in devices if d != "lo" and not d.startswith(OUR_DEVICE_PREFIX))
        whose = "not ours"
    else:
        foreign = sorted(d for d in devices if d != "lo" and d not in ours)
        whose = "not this VM's VIFs"
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise NetnsRefused(namespace, f"it exists and holds devices that are {whose} ({shown})")


def parse_deny(text: str) -> tuple[str, ...]:
    """``[AGENT] netns_deny``: comma- or space-separated glob patterns."""
    return tuple(p for p in re.split(r"[,\s]+", text) if p)
