"""twisted.web helpers the API server and the controller simulator share."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.web import server


class WatchedRequest(server.Request):
    """A request that knows when its client went away, from the public ``notifyFinish``.

    ``notifyFinish`` errbacks when the connection is lost before the response ends; it is
    asked for at creation, so the loss is seen whenever it happens (a Deferred asked for
    after the loss would never fire).
    """

    client_gone = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notifyFinish().addErrback(self._lost)

    def _lost(self, _: Failure) -> None:
        self.client_gone = True


def client_gone(request: server.Request) -> bool:
    """True once ``request``'s client has disconnected (False for a request that does not watch)."""
    return bool(getattr(request, "client_gone", False))
