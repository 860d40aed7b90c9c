"""The agent's end-to-end stack for tests: ``restproxy_testing.agent_stack``, with Open vSwitch installed first if missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from restproxy_testing import agent_stack as base
from restproxy_testing.agent_stack import HOST, AgentProcess, Stack
from tests.ovs_sandbox import require_ovs

__all__ = ["HOST", "AgentProcess", "Stack", "agent_stack"]


@contextmanager
def agent_stack(server_config: str = "", agent_config: str = "") -> Iterator[Stack]:
    """Sandbox + server + agent (see ``restproxy_testing.agent_stack``); fails, never skips, without OVS."""
    require_ovs()
    with base.agent_stack(server_config, agent_config) as stack:
        yield stack
