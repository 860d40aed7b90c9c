"""The DHCP agents' half of the channel over real HTTP, on every backend: list and watch of the networks with DHCP."""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

import pytest

from restproxy_testing.channel_support import channel_server, rpc
from restproxy_testing.support import ServerProcess


def _stream(server: ServerProcess, since: int, token: str, lines: list[dict[str, Any]], until: threading.Event) -> Any:
    req = urllib.request.Request(f"{server.url}/agent/v1/dhcp/watch?since={since}", headers={"X-Auth-Token": token})
    response = urllib.request.urlopen(req, timeout=30)

    def read() -> None:
        try:
            for line in response:
                message = json.loads(line)
                if message["type"] == "event":
                    lines.append(message)
                    if message["kind"] == "network_deleted":
                        until.set()
        except (OSError, ValueError, AttributeError):
            pass

    threading.Thread(target=read, daemon=True).start()
    return response


def _get(server: ServerProcess, path: str, token: str) -> tuple[int, Any]:
    return server.request("GET", path, headers={"X-Auth-Token": token})


def test_dhcp_agents_list_and_watch_networks_with_dhcp(db_url: str) -> None:
    with channel_server(db_url) as server:
        assert _get(server, "/agent/v1/dhcp/networks", "tok-h1")[0] == 403  # a host agent's token
        assert _get(server, "/agent/v1/dhcp/watch?since=0", "tok-h1")[0] == 403
        assert _get(server, "/agent/v1/dhcp/networks", "nope")[0] == 401
        status, listed = _get(server, "/agent/v1/dhcp/networks", "tok-dhcp1")
        assert status == 200 and listed["networks"] == []
        lines: list[dict[str, Any]] = []
        done = threading.Event()
        response = _stream(server, listed["seq"], "tok-dhcp1", lines, done)
        try:
            _, net = server.request("POST", "/v2.0/networks", {"network": {"name": "d", "tenant_id": "t"}})
            net_id = net["network"]["id"]
            _, plain = server.request("POST", "/v2.0/networks", {"network": {"name": "p", "tenant_id": "t"}})
            plain_id = plain["network"]["id"]
            body = {"ip_version": 4, "tenant_id": "t"}
            _, sub = server.request("POST", "/v2.0/subnets", {"subnet": dict(body, network_id=net_id, cidr="10.5.0.0/24")})
            subnet_id = sub["subnet"]["id"]
            server.request("POST", "/v2.0/subnets", {"subnet": dict(body, network_id=plain_id, cidr="10.6.0.0/24", enable_dhcp=False)})
            _, vm = server.request("POST", "/v2.0/ports", {"port": {"network_id": net_id, "tenant_id": "t", "device_id": "vm1"}})
            server.request("POST", "/v2.0/ports", {"port": {"network_id": plain_id, "tenant_id": "t", "device_id": "vm2"}})
            port_id = vm["port"]["id"]
            server.request("PUT", f"/v2.0/ports/{port_id}", {"port": {"name": "renamed"}})  # nothing DHCP serves: no event
            server.request("PUT", f"/v2.0/ports/{port_id}", {"port": {"fixed_ips": [{"subnet_id": subnet_id, "ip_address": "10.5.0.77"}]}})
            server.request("PUT", f"/v2.0/subnets/{subnet_id}", {"subnet": {"dns_nameservers": ["10.5.0.53"]}})
            # The DHCP port through the RPC: created bound to the agent's host, and the metadata route lands on the subnet.
            status, dhcp_port = rpc(server, "get_dhcp_port", {"network_id": net_id, "device_id": "dhcp-x", "host": "h1"}, "tok-dhcp1")
            assert status == 200, dhcp_port
            status, listed = _get(server, "/agent/v1/dhcp/networks", "tok-dhcp1")
            [served] = listed["networks"]
            assert served["id"] == net_id and [s["id"] for s in served["subnets"]] == [subnet_id]
            assert sorted(p["id"] for p in served["ports"]) == sorted([port_id, dhcp_port["result"]["id"]])
            assert {"destination": "169.254.169.254/32", "nexthop": dhcp_port["result"]["fixed_ips"][0]["ip_address"]} in served["subnets"][
                0
            ]["host_routes"]
            server.request("DELETE", f"/v2.0/ports/{port_id}")
            assert server.request("DELETE", f"/v2.0/networks/{net_id}")[0] == 204
            assert done.wait(15), lines
        finally:
            response.close()
        seen = [(m["kind"], m["object_id"]) for m in lines]
        dhcp_id = dhcp_port["result"]["id"]
        assert seen == [
            ("subnet_created", subnet_id),
            ("port_created", port_id),
            ("port_updated", port_id),  # its fixed IP; not its name
            ("subnet_updated", subnet_id),  # DNS servers
            ("port_created", dhcp_id),
            ("subnet_updated", subnet_id),  # the metadata route
            ("port_deleted", port_id),
            ("network_deleted", net_id),
        ], seen
        assert lines[2]["payload"]["port"]["fixed_ips"][0]["ip_address"] == "10.5.0.77"
        assert lines[3]["payload"]["subnet"]["dns_nameservers"] == ["10.5.0.53"]
        assert plain_id not in {m["object_id"] for m in lines} and all(
            m["payload"].get("port", {}).get("network_id") != plain_id for m in lines
        )


def test_the_dhcp_event_key_is_no_agent_host() -> None:
    from server_plugin.channel.api import AgentTokens

    with pytest.raises(ValueError, match="reserved"):
        AgentTokens({"t": {"host": "@dhcp", "kind": "agent"}})
