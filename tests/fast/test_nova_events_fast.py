"""Nova's events in the store (journaled with the port change, claimed per batch with a lease) and the sender on
a Clock against an in-memory Nova (StubTreq). The real stack is tests/test_nova_events.py."""

from __future__ import annotations

import datetime
import json
from typing import Any

from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.web import resource, server

from server_plugin.openstack.config import NovaConfig
from server_plugin.openstack.nova import NovaNotifier, catalog_url
from server_plugin.store import agents, nova_events
from server_plugin.store import ports as port_ops
from server_plugin.store.models import Network, Port, utcnow
from tests.fast.stubs import InlineStore, body_producer


def add_port(session: Any, port_id: str, owner: str = "compute:nova", device: str = "vm-1", status: str = "DOWN") -> None:
    if session.get(Network, "net") is None:
        session.add(Network(id="net", tenant_id="t"))
        session.flush()
    session.add(Port(id=port_id, tenant_id="t", network_id="net", mac_address=f"fa:16:3e:00:00:{len(port_id):02x}" + port_id[-1],
                     status=status, device_id=device, device_owner=owner, binding_host_id="h1"))  # fmt: skip


def events(store: InlineStore) -> list[tuple[str, str, str, str]]:
    return [(e["name"], e["server_uuid"], e["tag"], e["status"]) for e in store.run_sync(nova_events.pending)]


def test_transitions_are_neutrons() -> None:
    t = nova_events.transition
    assert t("DOWN", "ACTIVE") == t(None, "ACTIVE") == t("BUILD", "ACTIVE") == ("network-vif-plugged", "completed")
    assert t("DOWN", "ERROR") == ("network-vif-plugged", "failed")
    assert t("ACTIVE", "DOWN") == ("network-vif-unplugged", "completed")
    assert t("ACTIVE", "ERROR") is None and t("ERROR", "DOWN") is None and t("ACTIVE", "ACTIVE") is None


def test_status_changes_and_deletes_are_journaled_in_their_transaction(store: InlineStore) -> None:
    nova_events.install(store.store)
    store.run_sync(lambda s: (add_port(s, "p1"), add_port(s, "p2", owner="network:dhcp"), add_port(s, "p3", device="")))
    for port in ("p1", "p2", "p3"):
        store.run_sync(agents.set_status_from_agent, port, "h1", "ACTIVE")
    store.run_sync(agents.set_status_from_agent, "p1", "h1", "ACTIVE")  # no change, no event
    assert events(store) == [("network-vif-plugged", "vm-1", "p1", "completed")]
    store.run_sync(agents.set_statuses_from_agent, [], ["p1", "p2"], "h1")  # the bulk path
    store.run_sync(port_ops.set_port_status, "p1", "ERROR")
    store.run_sync(lambda s: s.delete(s.get(Port, "p1")))
    assert events(store)[1:] == [
        ("network-vif-unplugged", "vm-1", "p1", "completed"),
        ("network-vif-plugged", "vm-1", "p1", "failed"),
        ("network-vif-deleted", "vm-1", "p1", "completed"),
    ]

    def fails(session: Any) -> None:
        session.get(Port, "p2").device_owner = "compute:x"
        session.flush()
        agents.set_status_from_agent(session, "p2", "h1", "ACTIVE")
        raise RuntimeError("rolled back")

    try:
        store.run_sync(fails)
    except RuntimeError:
        pass
    assert len(events(store)) == 4  # a rolled-back change sends nothing


def test_without_install_nothing_is_journaled(store: InlineStore) -> None:
    store.run_sync(lambda s: add_port(s, "p1"))
    store.run_sync(agents.set_status_from_agent, "p1", "h1", "ACTIVE")
    store.run_sync(agents.set_statuses_from_agent, [], ["p1"], "h1")
    assert events(store) == []


def test_a_claim_is_exclusive_until_its_lease_runs_out(store: InlineStore) -> None:
    nova_events.install(store.store)
    store.run_sync(lambda s: [add_port(s, f"p{i}") for i in range(5)])
    store.run_sync(agents.set_statuses_from_agent, [f"p{i}" for i in range(5)], [], "h1")
    now = utcnow()
    first = store.run_sync(nova_events.claim, "a", 30, 3, now=now)
    second = store.run_sync(nova_events.claim, "b", 30, 10, now=now)
    assert [e["tag"] for e in first] == ["p0", "p1", "p2"] and [e["tag"] for e in second] == ["p3", "p4"]
    assert store.run_sync(nova_events.claim, "c", 30, 10, now=now) == []
    assert store.run_sync(nova_events.delivered, "b", [e["id"] for e in second]) == 2
    later = now + datetime.timedelta(seconds=31)  # "a" died: its claim runs out
    again = store.run_sync(nova_events.claim, "d", 30, 10, now=later)
    assert [e["tag"] for e in again] == ["p0", "p1", "p2"]
    assert store.run_sync(nova_events.delivered, "a", [e["id"] for e in first]) == 0  # the dead claim deletes nothing
    store.run_sync(nova_events.release, "d", 10, now=later)
    assert store.run_sync(nova_events.claim, "e", 30, 10, now=later + datetime.timedelta(seconds=9)) == []
    retried = store.run_sync(nova_events.claim, "e", 30, 10, now=later + datetime.timedelta(seconds=10))
    assert [e["attempts"] for e in retried] == [1, 1, 1]


class FakeNova(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[dict[str, Any]]] = []
        self.tokens: list[str] = []
        self.code = 200

    def render(self, request: server.Request) -> Any:
        if request.path == b"/v3/auth/tokens":
            request.setResponseCode(201)
            request.setHeader("X-Subject-Token", "nova-svc")
            expires = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
            catalog = [{"type": "compute", "endpoints": [{"interface": "internal", "region_id": "R1", "url": "http://nova:8774/v2.1"}]}]
            return json.dumps({"token": {"user": {"id": "u"}, "roles": [], "expires_at": expires, "catalog": catalog}}).encode()
        assert request.path == b"/v2.1/os-server-external-events"
        self.tokens.append(request.getHeader("X-Auth-Token") or "")
        if self.code != 200:
            request.setResponseCode(self.code)
            return b"{}"
        sent = json.loads(request.content.read())["events"]
        self.batches.append(sent)
        return json.dumps({"events": [dict(e, code=200) for e in sent]}).encode()


def notifier(store: InlineStore) -> tuple[NovaNotifier, FakeNova, RequestTraversalAgent, Clock]:
    clock = Clock()
    clock.advance(datetime.datetime.now(datetime.UTC).timestamp())
    nova = FakeNova()
    agent = RequestTraversalAgent(nova)
    conf = NovaConfig(auth_url="http://keystone/v3", username="nova", password="pw", project_name="service",
                      region_name="R1", endpoint_type="internal")  # fmt: skip
    return NovaNotifier(store, conf, 2.0, clock, http=HTTPClient(agent, data_to_body_producer=body_producer)), nova, agent, clock


def test_catalog_url() -> None:
    catalog = [
        {"type": "network", "endpoints": [{"interface": "public", "region_id": "R1", "url": "http://q"}]},
        {"type": "compute", "endpoints": [
            {"interface": "public", "region_id": "R2", "url": "http://nova-r2"},
            {"interface": "public", "region_id": "R1", "url": "http://nova-r1"},
        ]},
    ]  # fmt: skip
    assert catalog_url(catalog, "compute", "publicURL", "R1") == "http://nova-r1"
    assert catalog_url(catalog, "compute", "public") == "http://nova-r2"
    assert catalog_url(catalog, "compute", "internal") is None


def test_sender_batches_retries_and_deletes(store: InlineStore) -> None:
    nova_events.install(store.store)
    store.run_sync(lambda s: [add_port(s, f"p{i}", device=f"vm-{i}") for i in range(3)])
    store.run_sync(agents.set_statuses_from_agent, ["p0", "p1", "p2"], [], "h1")
    sender, nova, agent, clock = notifier(store)
    nova.code = 503
    sender.send_now()
    agent.flush()
    assert nova.batches == [] and [e["attempts"] for e in store.run_sync(nova_events.pending)] == [1, 1, 1]
    nova.code = 200
    sender.send_now()  # not due yet (backoff)
    agent.flush()
    assert nova.batches == []
    clock.advance(2)
    real_now = utcnow  # the store's own clock decides "due": move the rows instead of waiting
    store.run_sync(lambda s: s.execute(nova_events.update(nova_events.NovaEvent).values(not_before=real_now())))
    sender.send_now()
    agent.flush()
    assert [[e["tag"] for e in b] for b in nova.batches] == [["p0", "p1", "p2"]]
    assert nova.batches[0][0] == {"name": "network-vif-plugged", "server_uuid": "vm-0", "tag": "p0", "status": "completed"}
    assert nova.tokens[-1] == "nova-svc" and store.run_sync(nova_events.pending) == [] and sender.sent == 3
