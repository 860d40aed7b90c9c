"""The simulator's settings, shared by the command line, twistd and the admin API.

One small mutable object, so that ``PUT /_sim/config`` can change the behaviour of a running
simulator (capabilities after an "upgrade", latency) without a restart.
"""

from __future__ import annotations

import attrs

PROFILES = ("bigswitch", "floodlight")
FORGET_MODES = ("conflict", "silent")
DEFAULT_CAPABILITIES = ("floatingip", "consistency", "keep-alive")
DEFAULT_PORT = "tcp:8800:interface=127.0.0.1"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@attrs.define
class SimConfig:
    profile: str = "bigswitch"
    # (user, password) for HTTP Basic on the controller API, or None for no authentication.
    auth: tuple[str, str] | None = None
    capabilities: list[str] = attrs.field(factory=lambda: list(DEFAULT_CAPABILITIES))
    # What "forget" means for the bigswitch profile: "conflict" (409 until a /topology PUT)
    # or "silent" (just empty; unknown networks then get 404 NXVNS).
    forget_mode: str = "conflict"
    # Added to every controller request (never to /_sim/).
    latency_ms: float = 0.0
    # Start as if "forget" had just happened (a controller restarted empty).
    start_forgotten: bool = False

    def __attrs_post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, not {self.profile!r}")
        if self.forget_mode not in FORGET_MODES:
            raise ConfigError(f"forget mode must be one of {', '.join(FORGET_MODES)}, not {self.forget_mode!r}")
        if not isinstance(self.latency_ms, int | float) or isinstance(self.latency_ms, bool) or self.latency_ms < 0:
            raise ConfigError(f"latency must be a number of milliseconds >= 0, not {self.latency_ms!r}")
        if not isinstance(self.capabilities, list) or not all(isinstance(c, str) for c in self.capabilities):
            raise ConfigError("capabilities must be a list of strings")

    def public(self) -> dict[str, object]:
        """The settings as JSON for ``GET /_sim/config``: the password is never shown."""
        return {
            "profile": self.profile,
            "auth": None if self.auth is None else {"user": self.auth[0]},
            "capabilities": list(self.capabilities),
            "forget_mode": self.forget_mode,
            "latency_ms": self.latency_ms,
        }


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``user:password`` (the password may contain ':') -> (user, password)."""
    if value is None or value == "":
        return None
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ConfigError("--auth must look like user:password")
    return user, password


def parse_capabilities(value: str | None) -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"]; an empty string means no capabilities at all."""
    if value is None:
        return list(DEFAULT_CAPABILITIES)
    return [c.strip() for c in value.split(",") if c.strip()]
