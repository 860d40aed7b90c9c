"""Fault injection: make the controller slow, wrong, rude or silent on demand.

The plugin's server pool must fail over on errors and timeouts, retry 503s, re-sync after a
409 and survive dropped connections; each of those paths is tested by arming a rule here
(``POST /_sim/faults``) rather than by killing processes at the right moment.

A rule matches requests by method and path regex. When it matches it "fires" (always, or
for a ``fraction`` of them drawn from a seeded RNG), for at most ``count`` requests, and
then adds its ``latency_ms`` and applies its action:

- ``delay``: only the latency (the default when only ``latency_ms`` is given);
- ``status``: answer ``status`` (with ``body``/``headers`` if given) instead of handling it;
- ``drop``: close the TCP connection without answering;
- ``hang``: never answer, until the rule is removed or all faults are cleared (the request is
  then handled normally) or the client gives up.

Latencies of all firing rules add up; the first firing rule with another action decides.
Waiting is always ``reactor.callLater``-based, never a sleep.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from controller_sim.replies import bad_request

ACTIONS = ("delay", "status", "drop", "hang")
FIELDS = ("latency_ms", "status", "count", "fraction", "seed", "methods", "path_regex", "action", "body", "headers")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@attrs.define
class FaultRule:
    id: int
    action: str
    status: int | None = None
    latency_ms: float = 0.0
    count: int | None = None  # what is left; None = no limit
    fraction: float | None = None
    seed: int | str | None = None
    methods: list[str] | None = None
    path_regex: str | None = None
    body: Any = None
    headers: dict[str, str] = attrs.field(factory=dict)
    hits: int = 0
    pattern: re.Pattern[str] | None = None
    rng: random.Random = attrs.field(factory=random.Random)

    @classmethod
    def from_json(cls, rule_id: int, data: Any) -> FaultRule:
        """A rule from ``POST /_sim/faults``; a 400 names whatever is wrong."""
        if not isinstance(data, dict):
            raise bad_request("a fault must be a JSON object")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise bad_request(f"unknown fault fields: {', '.join(unknown)} (known: {', '.join(FIELDS)})")
        latency = data.get("latency_ms", 0)
        if not _number(latency) or latency < 0:
            raise bad_request("latency_ms must be a number >= 0")
        status = data.get("status")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599):
            raise bad_request("status must be an HTTP status code (100-599)")
        action = data.get("action") or ("status" if status is not None else "delay" if latency else None)
        if action not in ACTIONS:
            raise bad_request(f"action must be one of {', '.join(ACTIONS)} (or give status or latency_ms)")
        if action == "status" and status is None:
            raise bad_request("action 'status' needs a status")
        if action != "status" and status is not None:
            raise bad_request(f"status goes with action 'status', not {action!r}")
        count = data.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise bad_request("count must be an integer >= 1")
        fraction = data.get("fraction")
        if fraction is not None and (not _number(fraction) or not 0 <= fraction <= 1):
            raise bad_request("fraction must be a number between 0 and 1")
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
            raise bad_request("seed must be an integer or a string")
        methods = data.get("methods")
        if methods is not None:
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise bad_request("methods must be a list of strings")
            methods = [m.upper() for m in methods]
        path_regex = data.get("path_regex")
        pattern = None
        if path_regex is not None:
            if not isinstance(path_regex, str):
                raise bad_request("path_regex must be a string")
            try:
                pattern = re.compile(path_regex)
            except re.error as e:
                raise bad_request(f"path_regex is not a regular expression: {e}") from None
        headers = data.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise bad_request("headers must be an object of strings")
        return cls(
            id=rule_id,
            action=action,
            status=status,
            latency_ms=float(latency),
            count=count,
            fraction=None if fraction is None else float(fraction),
            seed=seed,
            methods=methods,
            path_regex=path_regex,
            body=data.get("body"),
            headers=headers,
            pattern=pattern,
            rng=random.Random(seed) if seed is not None else random.Random(),
        )

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.pattern is None or self.pattern.search(path) is not None

    def fires(self) -> bool:
        return self.fraction is None or self.rng.random() < self.fraction

    def reply_body(self) -> Any:
        if self.body is not None:
            return self.body
        if self.status == 409:
            return {"error": "requires synchronization"}
        return {"error": f"injected fault: HTTP {self.status}"}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "count": self.count,
            "fraction": self.fraction,
            "seed": self.seed,
            "methods": self.methods,
            "path_regex": self.path_regex,
            "body": self.body,
            "headers": self.headers,
            "hits": self.hits,
        }


@attrs.frozen
class Decision:
    latency_ms: float = 0.0
    rule: FaultRule | None = None  # the rule whose status/drop/hang applies


class FaultInjector:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.injected: Counter[str] = Counter()  # by kind: latency, status, drop, hang
        self.affected = 0  # requests that at least one rule fired on
        self._next_id = 1
        self._hung: dict[int, list[Deferred[None]]] = {}

    def add(self, data: Any) -> FaultRule:
        rule = FaultRule.from_json(self._next_id, data)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        self._release(self._hung.pop(rule_id, []))
        return len(self.rules) != before

    def clear(self) -> int:
        """Remove every rule and let every hung request go on; how many rules there were."""
        n = len(self.rules)
        self.rules = []
        hung, self._hung = self._hung, {}
        for waiters in hung.values():
            self._release(waiters)
        return n

    @staticmethod
    def _release(waiters: list[Deferred[None]]) -> None:
        for d in waiters:
            if not d.called:
                d.callback(None)

    @property
    def hung_now(self) -> int:
        return sum(len(w) for w in self._hung.values())

    def decide(self, method: str, path: str) -> Decision:
        latency = 0.0
        chosen: FaultRule | None = None
        for rule in list(self.rules):
            if not rule.matches(method, path) or (rule.action != "delay" and chosen is not None):
                continue
            if not rule.fires():
                continue
            rule.hits += 1
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
            latency += rule.latency_ms
            if rule.latency_ms:
                self.injected["latency"] += 1
            if rule.action != "delay":
                chosen = rule
                self.injected[rule.action] += 1
        if latency or chosen is not None:
            self.affected += 1
        return Decision(latency, chosen)

    def wait_released(self, rule: FaultRule) -> Deferred[None]:
        """Fires when ``rule`` is removed or faults are cleared; cancel it if the client goes."""
        waiters = self._hung.setdefault(rule.id, [])

        def forget(d: Deferred[None]) -> None:
            if d in waiters:
                waiters.remove(d)

        d: Deferred[None] = Deferred(canceller=forget)
        waiters.append(d)
        return d
