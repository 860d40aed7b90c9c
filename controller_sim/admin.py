"""The admin API under ``/_sim/``: arm faults, forget state, look at what happened.

JSON in and out, never authenticated, never faulted and never recorded, so that a test can
always reach it, even while the controller API itself is "down".

    GET    /_sim                 this index
    GET    /_sim/faults          {"faults": [rule, ...]}
    POST   /_sim/faults          a rule (see controller_sim.faults) -> 201 {"fault": rule}
    DELETE /_sim/faults          remove all rules, release hung requests -> {"cleared": n}
    DELETE /_sim/faults/{id}     remove one rule, release its hung requests
    POST   /_sim/forget          wipe the state as a restart would; optional {"mode": "conflict"|"silent"}
    GET    /_sim/state           the normalised state (?raw=1 adds the stored bodies, ?summary=1 only counts)
    GET    /_sim/requests        {"requests": [...]} the last 1000 (?since=SEQ, ?bodies=1, ?limit=N)
    DELETE /_sim/requests        empty the log
    GET    /_sim/stats           counters; DELETE resets them
    GET    /_sim/config          the settings; PUT changes capabilities, forget_mode, latency_ms
"""

from __future__ import annotations

from typing import Any

from controller_sim.config import ConfigError
from controller_sim.replies import ApiError, Reply, bad_request, decode_json
from controller_sim.simulator import Simulator

CONFIG_FIELDS = ("capabilities", "forget_mode", "latency_ms")


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return (query.get(name) or ["0"])[-1].lower() in ("1", "true", "yes")


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int((query.get(name) or [str(default)])[-1])
    except ValueError:
        raise bad_request(f"?{name}= must be an integer") from None


class AdminAPI:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def handle(self, method: str, segments: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        try:
            return self._dispatch(method, segments, query, body)
        except ApiError as e:
            return e.reply()

    def _dispatch(self, method: str, segments: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        route = "/".join(segments[:1])
        allowed: dict[str, tuple[str, ...]] = {
            "": ("GET",),
            "faults": ("GET", "POST", "DELETE"),
            "forget": ("POST",),
            "state": ("GET",),
            "requests": ("GET", "DELETE"),
            "stats": ("GET", "DELETE"),
            "config": ("GET", "PUT"),
        }
        if route not in allowed or (len(segments) > 1 and not (route == "faults" and len(segments) == 2)):
            raise ApiError(404, f"no such admin resource: /_sim/{'/'.join(segments)}")
        methods = ("DELETE",) if len(segments) == 2 else allowed[route]
        if method not in methods:
            raise ApiError(405, f"method {method} not allowed here", {"Allow": ", ".join(methods)})
        return getattr(self, f"{method.lower()}_{route or 'index'}")(segments[1:], query, body)

    # -- index --------------------------------------------------------------------------------

    def get_index(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        paragraph = next(p for p in (__doc__ or "").split("\n\n") if p.lstrip().startswith("GET"))
        endpoints = [" ".join(line.split()) for line in paragraph.strip().splitlines()]
        return Reply(200, {"profile": self.sim.controller.profile, "endpoints": endpoints})

    # -- faults ---------------------------------------------------------------------------------

    def get_faults(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        return Reply(200, {"faults": [r.to_json() for r in self.sim.faults.rules]})

    def post_faults(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        rule = self.sim.faults.add(decode_json(body))
        return Reply(201, {"fault": rule.to_json()})

    def delete_faults(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        if args:
            try:
                rule_id = int(args[0])
            except ValueError:
                raise ApiError(404, f"no fault {args[0]!r}") from None
            if not self.sim.faults.remove(rule_id):
                raise ApiError(404, f"no fault {rule_id}")
            return Reply(200, {"removed": rule_id})
        return Reply(200, {"cleared": self.sim.faults.clear()})

    # -- state ----------------------------------------------------------------------------------

    def post_forget(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        data = decode_json(body, required=False) or {}
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object")
        mode = data.get("mode")
        if mode not in (None, "conflict", "silent"):
            raise bad_request('mode must be "conflict" or "silent"')
        self.sim.forget(mode)
        return Reply(200, {"status": "ok", "needs_sync": self.sim.controller.needs_sync})

    def get_state(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        controller = self.sim.controller
        if _flag(query, "summary"):
            return Reply(200, {"profile": controller.profile, "needs_sync": controller.needs_sync, "counts": controller.counts()})
        return Reply(200, controller.snapshot(raw=_flag(query, "raw")))

    # -- requests and stats -----------------------------------------------------------------------

    def get_requests(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        items = self.sim.recorder.listing(since=_int(query, "since", 0), bodies=_flag(query, "bodies"))
        limit = _int(query, "limit", 0)
        if limit > 0:
            items = items[-limit:]
        return Reply(200, {"requests": items})

    def delete_requests(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        self.sim.recorder.clear()
        return Reply(200, {"status": "ok"})

    def get_stats(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        return Reply(200, self.sim.stats())

    def delete_stats(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        self.sim.recorder.reset_counts()
        self.sim.faults.injected.clear()
        self.sim.faults.affected = 0
        return Reply(200, {"status": "ok"})

    # -- config -------------------------------------------------------------------------------------

    def get_config(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        return Reply(200, self.sim.config.public())

    def put_config(self, args: list[str], query: dict[str, list[str]], body: bytes) -> Reply:
        data: Any = decode_json(body)
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object")
        unknown = sorted(set(data) - set(CONFIG_FIELDS))
        if unknown:
            raise bad_request(f"cannot change {', '.join(unknown)} at run time (only {', '.join(CONFIG_FIELDS)})")
        config = self.sim.config
        old = {k: getattr(config, k) for k in CONFIG_FIELDS}
        for key, value in data.items():
            setattr(config, key, value)
        try:
            config.check()
        except ConfigError as e:
            for key, value in old.items():
                setattr(config, key, value)
            raise bad_request(str(e)) from None
        return Reply(200, config.public())
