"""One controller request as the profiles see it: method, path, headers and body bytes.

Decoupled from twisted.web so that the profiles are plain objects: the web layer builds a
:class:`ControllerRequest` after faults, latency and authentication have been applied.
"""

from __future__ import annotations

from urllib.parse import unquote

import attrs

from controller_sim import BASE_PATH


@attrs.frozen
class ControllerRequest:
    method: str
    path: str  # the full path, without the query string
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    @property
    def segments(self) -> list[str] | None:
        """The URL-decoded segments after the base path, or None when outside it."""
        if self.path != BASE_PATH and not self.path.startswith(BASE_PATH + "/"):
            return None
        return [unquote(s) if "%" in s else s for s in self.path[len(BASE_PATH) :].split("/") if s]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def match(pattern: tuple[str | None, ...], segments: list[str]) -> list[str] | None:
    """The variable parts if ``segments`` fit ``pattern`` (None = any one segment)."""
    if len(pattern) != len(segments):
        return None
    args = []
    for want, got in zip(pattern, segments, strict=True):
        if want is None:
            args.append(got)
        elif want != got:
            return None
    return args
