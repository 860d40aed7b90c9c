"""The host agents' start without the cyclic garbage collector while their modules are imported.

Importing restproxy-agent's modules (Twisted, os-ken, python-ovs, pyroute2) makes ~150,000 long-lived objects, and
the collector's full passes over them as they pile up took ~0.45 s of the agent's start (measured: the import took
1.48 s with the collector, 1.04 s without, median of 7), before its first reconcile. Nothing those imports make is
garbage, so the plugin pauses the collector when twistd asks for its options (the first use of its modules), and
``makeService`` freezes what was imported (it lives as long as the process, out of the collector's sight) and
resumes collecting.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.application.service import ServiceMaker


class ImportedWithoutCollector(ServiceMaker):
    """A twistd plugin whose module is imported with the collector paused; its ``makeService`` must call
    ``resume_collector`` first."""

    @property
    def options(self) -> Any:
        gc.disable()
        return super().options


def resume_collector() -> None:
    """Freeze what is alive and collect again, if an ``ImportedWithoutCollector`` plugin paused the collector (not
    when a test or another program builds the service: their objects are not frozen)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
