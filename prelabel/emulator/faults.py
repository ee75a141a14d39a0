"""Fault injection for the emulator: the failures the real service and its network produce.

A connector is only as good as its reaction to a slow, throttled or broken API, and none of those
can be provoked against the real Segments.ai on demand. Each :class:`FaultRule` names the requests
it affects (a path pattern and a method) and what happens to them: added latency, a 500/502/503,
a DRF-style 429 with ``Retry-After``, a connection closed without any response, or a request that
never gets an answer. Decisions come from one seeded :class:`random.Random`, so the same seed and
the same sequence of requests give the same faults (tests stay reproducible).
"""

from __future__ import annotations

import fnmatch
import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["error", "throttle", "drop", "hang"]

_DEFAULT_ERROR_STATUSES = (500, 502, 503)


@dataclass(frozen=True)
class FaultRule:
    """Which requests to disturb and how.

    The first rule whose ``path`` and ``method`` match a request decides its fate; later rules are
    not consulted. Rates are probabilities in [0, 1] drawn once per request from the injector's
    seeded generator, in the order hang, drop, throttle, error; their sum must not exceed 1.

    Attributes:
        path: ``fnmatch`` glob on the request path without the query (``*`` also crosses ``/``),
            e.g. ``"/labels/*"``; or a regular expression prefixed with ``re:``, searched with
            ``re.search``. ``"*"`` matches every route except the ``/_emulator/`` side channel.
        method: ``"*"`` or one or more methods separated by commas, e.g. ``"GET,PUT"``.
        latency_s: Seconds slept before answering (also before an injected failure).
        error_rate: Probability of answering with one of ``error_statuses`` (default 500/502/503,
            chosen uniformly by the same generator). No ``Retry-After`` is sent, like a crashing
            backend, so the SDK does not retry these.
        error_statuses: The statuses ``error_rate`` picks from.
        throttle_rate: Probability of a 429 with ``Retry-After: retry_after_s`` and the DRF body
            ``{"detail": "Request was throttled. Expected available in N seconds."}``.
        retry_after_s: The ``Retry-After`` value of a throttled answer. urllib3 under the SDK
            sleeps this long before each of its 3 retries of GET/PUT/DELETE, so tests use 0.
        drop_rate: Probability of reading the request and closing the connection with no answer.
        hang_rate: Probability of reading the request and never answering: the connection stays
            open for ``hang_s`` seconds (``None``: until the emulator stops), then is closed.
        hang_s: See ``hang_rate``.
        times: Apply this rule to at most this many matching requests (``None``: forever); with
            a rate of 1.0 this reads "fail the next N such requests".
    """

    path: str = "*"
    method: str = "*"
    latency_s: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = _DEFAULT_ERROR_STATUSES
    throttle_rate: float = 0.0
    retry_after_s: int = 1
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        rates = (self.error_rate, self.throttle_rate, self.drop_rate, self.hang_rate)
        if any(rate < 0 or rate > 1 for rate in rates) or sum(rates) > 1 + 1e-9:
            raise ValueError(f"fault rates must be in [0, 1] and sum to at most 1, got {rates}")
        if self.latency_s < 0 or self.retry_after_s < 0:
            raise ValueError("latency_s and retry_after_s must not be negative")
        if not self.error_statuses and self.error_rate > 0:
            raise ValueError("error_rate > 0 needs at least one status in error_statuses")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be None or >= 0")
        if self.path.startswith("re:"):
            try:  # fail at configuration time, not on the first request
                re.compile(self.path[3:])
            except re.error as error:
                raise ValueError(f"invalid path regex {self.path[3:]!r}: {error}") from error
        # Lists arrive from JSON; keep the dataclass hashable and comparable.
        object.__setattr__(self, "error_statuses", tuple(int(s) for s in self.error_statuses))

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule covers a request (ignoring ``times``)."""
        if self.method.strip() != "*":
            allowed = {m.strip().upper() for m in self.method.split(",")}
            if method.upper() not in allowed:
                return False
        if self.path.startswith("re:"):
            return re.search(self.path[3:], path) is not None
        return fnmatch.fnmatchcase(path, self.path)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the inverse of :meth:`from_dict`."""
        data = asdict(self)
        data["error_statuses"] = list(self.error_statuses)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from JSON (the HTTP side channel); unknown keys are an error, not ignored,
        so a typo such as ``error_rat`` cannot silently disable a test's fault."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        values = dict(data)
        if "error_statuses" in values:
            values["error_statuses"] = tuple(values["error_statuses"])
        return cls(**values)


@dataclass(frozen=True)
class FaultDecision:
    """What the server must do with one request. ``kind`` is ``None`` when it answers normally
    (possibly after ``latency_s``)."""

    kind: FaultKind | None = None
    latency_s: float = 0.0
    status: int | None = None
    retry_after_s: int = 0
    hang_s: float | None = None


NO_FAULT = FaultDecision()


@dataclass
class _RuleState:
    rule: FaultRule
    applied: int = 0


@dataclass
class FaultInjector:
    """Holds the active rules and the seeded generator; safe to use from many handler threads.

    Replacing the rules with :meth:`configure` resets the generator to the given seed, so a test
    that sets the same rules and seed twice sees the same sequence of faults both times.
    """

    seed: int = 0
    _rules: list[_RuleState] = field(init=False, default_factory=list)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def rules(self) -> list[FaultRule]:
        """The active rules, first match first."""
        with self._lock:
            return [state.rule for state in self._rules]

    def configure(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        """Replace all rules; ``seed`` (default: keep the current one) restarts the generator."""
        new_rules = [_RuleState(rule) for rule in rules]
        with self._lock:
            if seed is not None:
                self.seed = seed
            self._rng = random.Random(self.seed)
            self._rules = new_rules

    def clear(self) -> None:
        """Remove all rules: every request is answered normally again."""
        self.configure([])

    def decide(self, method: str, path: str) -> FaultDecision:
        """Pick the fault for one request; draws a number only when a rule with rates applies."""
        with self._lock:
            for state in self._rules:
                rule = state.rule
                if not rule.matches(method, path):
                    continue
                if rule.times is not None and state.applied >= rule.times:
                    continue
                state.applied += 1
                return self._draw(rule)
        return NO_FAULT

    def _draw(self, rule: FaultRule) -> FaultDecision:
        base = FaultDecision(latency_s=rule.latency_s)
        total = rule.hang_rate + rule.drop_rate + rule.throttle_rate + rule.error_rate
        if total <= 0:
            return base
        roll = self._rng.random()
        if roll < rule.hang_rate:
            return FaultDecision("hang", rule.latency_s, hang_s=rule.hang_s)
        roll -= rule.hang_rate
        if roll < rule.drop_rate:
            return FaultDecision("drop", rule.latency_s)
        roll -= rule.drop_rate
        if roll < rule.throttle_rate:
            return FaultDecision(
                "throttle", rule.latency_s, status=429, retry_after_s=rule.retry_after_s
            )
        roll -= rule.throttle_rate
        if roll < rule.error_rate:
            status = self._rng.choice(rule.error_statuses)
            return FaultDecision("error", rule.latency_s, status=status)
        return base


def throttled_detail(retry_after_s: int) -> str:
    """DRF's stock throttling message, which the SDK (and a connector) match on ``throttled``."""
    unit = "second" if retry_after_s == 1 else "seconds"
    return f"Request was throttled. Expected available in {retry_after_s} {unit}."
