"""The DHCP agent's side of the channel: the host agent's client and watch, on the ``/agent/v1/dhcp`` paths."""

from __future__ import annotations

from typing import Any

from restproxy_agent.channel import ChannelClient


class DhcpChannelClient(ChannelClient):
    """``list_ports`` lists the served networks (each with subnets and ports); ``open_watch`` watches their events.

    ``restproxy_agent.channel.PortWatch`` drives it unchanged (list, watch, resume, relist, backoff)."""

    async def list_ports(self) -> tuple[int, list[dict[str, Any]]]:
        response = await self._http.get(f"{self.url}/agent/v1/dhcp/networks", headers=self._headers, timeout=self.timeout)
        data = await self._json(response)
        return data["seq"], data["networks"]

    async def open_watch(self, since: int) -> Any:
        response = await self._http.get(
            f"{self.url}/agent/v1/dhcp/watch", params={"since": str(since)}, headers=self._headers, timeout=self.timeout, unbuffered=True
        )
        if response.code >= 400:
            await self._json(response)
        return response
