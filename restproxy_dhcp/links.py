"""Netlink for the DHCP ports: restproxy_agent's ``Links`` (veth into a namespace, deletion) plus addresses and a namespace list."""

from __future__ import annotations

from pyroute2 import IPRoute, netns
from twisted.internet import defer

from restproxy_agent.links import LinkError, Links, NetnsThread
from restproxy_agent.netns_policy import check_name


def set_addresses_sync(namespace: str, ifname: str, cidrs: list[str]) -> tuple[int, int]:
    """Make ``ifname``'s global addresses in ``namespace`` exactly ``cidrs``; (added, removed). Run in a
    ``NetnsThread``: ``IPRoute(netns=...)`` would fork a child per call."""
    check_name(namespace, deny=())
    with NetnsThread(namespace, create=False) as thread:
        return thread.call(_set_addresses_here, namespace, ifname, cidrs)


def _set_addresses_here(namespace: str, ifname: str, cidrs: list[str]) -> tuple[int, int]:
    want = {(c.split("/")[0], int(c.split("/")[1])) for c in cidrs}
    with IPRoute() as ns:
        idx = ns.link_lookup(ifname=ifname)
        if not idx:
            raise LinkError("addr", ifname, None, f"no such device in {namespace}")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ns.get_addr(index=idx[0]) if a["scope"] == 0}
        for ip, plen in sorted(want - have):
            ns.addr("add", index=idx[0], address=ip, prefixlen=plen, **({"flags": 0x80} if ":" in ip else {}))  # IFA_F_NODAD for v6
        for ip, plen in sorted(have - want):
            ns.addr("del", index=idx[0], address=ip, prefixlen=plen)
        return len(want - have), len(have - want)


def list_netns_sync(prefix: str) -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


class DhcpLinks(Links):
    def set_addresses(self, namespace: str, ifname: str, cidrs: list[str]) -> defer.Deferred:
        return self._call(set_addresses_sync, namespace, ifname, cidrs)

    def list_netns(self, prefix: str) -> defer.Deferred:
        return self._call(list_netns_sync, prefix)
