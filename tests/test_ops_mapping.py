"""The pure half of a change: (profile, before, after) -> controller calls, and the extension registry's tables."""

from __future__ import annotations

from typing import Any

import pytest

from server_plugin.controller import l3_mapping, mapping
from server_plugin.extensions import Collection, Extension, Extensions
from server_plugin.ops.base import Call, Delta, Profile, controller_calls, controller_lanes
from server_plugin.ops.core import PortRules

BSN = Profile(mapping.BIGSWITCH)
FLOODLIGHT = Profile(mapping.FLOODLIGHT)
NET = {"id": "n1", "tenant_id": "t1", "name": "net", "admin_state_up": True, "subnets": []}


def _port(**changes: Any) -> dict[str, Any]:
    port = {
        "id": "p1",
        "network_id": "n1",
        "network_tenant_id": "t1",
        "tenant_id": "t2",
        "device_id": "",
        "mac_address": "fa:16:3e:00:00:01",
    }
    return dict(port, **changes)


def test_port_moving_between_devices_detaches_then_attaches_in_that_order() -> None:
    calls = mapping.port_calls(BSN, _port(device_id="vm1"), _port(device_id="vm2"))
    assert [(c.method, c.path) for c in calls] == [
        ("PUT", "/tenants/t1/networks/n1/ports/p1"),
        ("DELETE", "/tenants/t1/networks/n1/ports/p1/attachment"),
        ("PUT", "/tenants/t1/networks/n1/ports/p1/attachment"),
    ]
    assert calls[2].body == {"attachment": {"id": "vm2", "mac": "fa:16:3e:00:00:01"}}


def test_floodlight_gets_only_attachments_of_ports_and_puts_networks_it_deletes_first() -> None:
    assert mapping.port_calls(FLOODLIGHT, None, _port()) == []
    assert [c.method for c in mapping.port_calls(FLOODLIGHT, None, _port(device_id="vm"))] == ["PUT"]
    assert [c.method for c in mapping.network_calls(FLOODLIGHT, NET, None)] == ["PUT", "DELETE"]
    assert [c.method for c in mapping.network_calls(BSN, None, NET)] == ["POST"]
    assert [c.method for c in mapping.network_calls(BSN, NET, None)] == ["DELETE"]


def test_floating_ips_are_resources_with_the_capability_else_their_network_is_put() -> None:
    change = {"floatingips": [{"id": "f1", "tenant_id": "t1", "floatingip": None}], "networks": [NET]}
    with_cap = l3_mapping.floatingip_calls(Profile(mapping.BIGSWITCH, frozenset({"floatingip"})), None, change)
    assert with_cap == [Call("DELETE", "/tenants/t1/floatingips/f1", ignore=(404,))]
    assert [(c.method, c.path) for c in l3_mapping.floatingip_calls(BSN, None, change)] == [("PUT", "/tenants/t1/networks/n1")]
    assert l3_mapping.floatingip_calls(FLOODLIGHT, None, change) == []


def test_controller_calls_keep_the_order_of_the_deltas() -> None:
    deltas = [Delta(mapping.port_calls, _port(), None), Delta(mapping.network_calls, NET, None)]
    assert [c.path for c in controller_calls(BSN, deltas)] == ["/tenants/t1/networks/n1/ports/p1", "/tenants/t1/networks/n1"]


def test_a_bulk_create_has_one_lane_per_port_and_other_changes_one_lane() -> None:
    """Independent deltas (a bulk create's ports) may go out concurrently, each port's calls in order; a port without a
    device gets no Floodlight call and so no lane."""
    ports = [Delta(mapping.port_calls, None, _port(id=f"p{i}", device_id="vm" if i else "")) for i in range(3)]
    lanes = controller_lanes(BSN, ports, independent=True)
    assert [[(c.method, c.path.rsplit("/", 2)[-2:]) for c in lane] for lane in lanes] == [
        [("POST", ["n1", "ports"])],
        [("POST", ["n1", "ports"]), ("PUT", ["p1", "attachment"])],
        [("POST", ["n1", "ports"]), ("PUT", ["p2", "attachment"])],
    ]
    assert [len(lane) for lane in controller_lanes(FLOODLIGHT, ports, independent=True)] == [1, 1]
    assert controller_lanes(BSN, ports, independent=False) == [controller_calls(BSN, ports)]
    assert controller_lanes(FLOODLIGHT, ports[:1], independent=False) == []


class _Core:
    def __init__(self) -> None:
        self.port_rules: list[PortRules] = []


def test_registry_tables_come_from_the_extensions_and_port_rules_join_the_core() -> None:
    core, rules = _Core(), PortRules()
    things = Collection("things", "thing", {}, Exception)  # type: ignore[arg-type]
    registry = Extensions(core, [Extension("x", object(), (things,), ({"alias": "x"},), port_rules=rules)])
    assert list(registry.collections) == ["things"] and registry.aliases == ["x"] and core.port_rules == [rules]
    with pytest.raises(ValueError, match="served twice"):
        registry.register(Extension("y", object(), (things,)))
