"""twisted.web helpers the API server and the controller simulator share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

FinishHook = Callable[[Failure | None], object]

_log = Logger()


class WatchedRequest(server.Request):
    """A request that knows when its client went away, from the public ``notifyFinish``.

    ``notifyFinish`` errbacks when the connection is lost before the response ends; it is
    asked for at creation, so the loss is seen whenever it happens (a Deferred asked for
    after the loss would never fire). The same one Deferred runs the ``on_finish`` hooks,
    so that each party that waits for the end (metrics, in-flight count, the handler) does
    not cost the request a Deferred of its own.
    """

    client_gone = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # JSON APIs: a POST's body is never an HTML form, so twisted.web need not parse its
        # Content-Type (with the email package: tens of microseconds a request) to look for one.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)
        self._finish_hooks: list[FinishHook] | None = []  # None once the request ended
        self._lost_by: Failure | None = None
        self.notifyFinish().addBoth(self._ended)

    def on_finish(self, hook: FinishHook) -> None:
        """Call ``hook(None)`` when the response has been written, or ``hook(failure)`` if the
        connection was lost first; at once if that already happened."""
        if self._finish_hooks is None:
            hook(self._lost_by)
        else:
            self._finish_hooks.append(hook)

    def _ended(self, result: Any) -> None:
        if isinstance(result, Failure):
            self.client_gone = True
            self._lost_by = result
        hooks, self._finish_hooks = self._finish_hooks or [], None
        for hook in hooks:
            try:
                hook(self._lost_by)
            except Exception:
                _log.failure("a request's finish hook failed")


def on_finish(request: server.Request, hook: FinishHook) -> None:
    """``hook`` as ``WatchedRequest.on_finish`` runs it, for any request (others through a ``notifyFinish`` of its own)."""
    if isinstance(request, WatchedRequest):
        request.on_finish(hook)
        return

    def ended(result: Any) -> None:
        hook(result if isinstance(result, Failure) else None)

    request.notifyFinish().addBoth(ended)


def client_gone(request: server.Request) -> bool:
    """True once ``request``'s client has disconnected (False for a request that does not watch)."""
    return bool(getattr(request, "client_gone", False))
