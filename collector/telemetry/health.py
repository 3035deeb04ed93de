"""The collector's health: healthy, degraded or failing, with a reason a person can act on.

Each part of the collector reports a condition under its own name ("rules", "stream", "s3",
"spool"):
a severity and a one-line reason that carries the service's own words (X's problem title and
detail, S3's error code and the key prefix tried). The health is the worst condition; its
reason lists every condition of that severity, then those of a milder one. A condition may
start as degraded and become failing once it has lasted `failing_after` seconds (a brief S3
hiccup is not an alarm, a refusal that persists is); reporting success clears it.

status.json carries `health` and `health_reason` (null when healthy); `collector status` exits
0 only when healthy; CloudWatch publishes the same state as its `Healthy` metric (0/1),
which the `twittersnake-unhealthy` alarm watches, with one exception: a pause by the budget
alone (condition "budget": planned, with its own BudgetPaused metric and alarm) is degraded in
status but `Healthy` 1 (collector.telemetry.metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"
BUDGET_CONDITION = "budget"  # the budget's pause (collector.source.budget): planned
_RANK = {HEALTHY: 0, DEGRADED: 1, FAILING: 2}


@dataclass
class _Condition:
    severity: str
    reason: str
    since: float
    failing_after: float | None  # seconds as degraded before it counts as failing
    degraded_after: float  # seconds before it counts at all (a blip is not a condition)
    timed: bool = False  # the reason's "{lasted}" is replaced by the seconds since `since`

    def text(self, now: float) -> str:
        if not self.timed:
            return self.reason
        return self.reason.replace("{lasted}", f"{max(0.0, now - self.since):.0f}")


class Health:
    """Thread-safe set of named conditions; `state()` is (health, reason or None)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._conditions: dict[str, _Condition] = {}
        self._logged: tuple[str, str] = (HEALTHY, "")
        # When the last condition was cleared (epoch s): errors from before it are history.
        self.recovered_at: float | None = None

    def report(
        self,
        source: str,
        severity: str,
        reason: str,
        failing_after: float | None = None,
        degraded_after: float = 0.0,
        lasted: float = 0.0,
        timed: bool = False,
    ) -> None:
        """Set `source`'s condition. A repeated report keeps the time it started, so a
        condition counts once it lasted `degraded_after` seconds, and a degraded one turns
        failing after `failing_after` seconds. `lasted` (s): how long a new condition has
        already lasted when first reported (a stall starts at the last byte received, not
        when it is noticed). `timed`: each "{lasted}" in `reason` reads as the seconds the
        condition has lasted, whenever the reason is read."""
        if severity not in _RANK:
            raise ValueError(f"unknown health {severity!r}")
        with self._lock:
            current = self._conditions.get(source)
            since = current.since if current is not None else self._clock() - max(0.0, lasted)
            self._conditions[source] = _Condition(
                severity, reason, since, failing_after, degraded_after, timed
            )
        self.log_change()

    def clear(self, source: str) -> None:
        with self._lock:
            found = self._conditions.pop(source, None)
            if found is not None and not self._conditions:
                self.recovered_at = time.time()
        if found is not None:
            self.log_change()

    def reason_of(self, source: str) -> str | None:
        with self._lock:
            condition = self._conditions.get(source)
        return condition.text(self._clock()) if condition else None

    def _severity(self, condition: _Condition, now: float) -> str:
        if now - condition.since < condition.degraded_after:
            return HEALTHY
        if (
            condition.severity == DEGRADED
            and condition.failing_after is not None
            and now - condition.since >= condition.failing_after
        ):
            return FAILING
        return condition.severity

    def state(self) -> tuple[str, str | None]:
        now = self._clock()
        with self._lock:
            graded = [(self._severity(c, now), c.text(now)) for c in self._conditions.values()]
        worst = max((severity for severity, _ in graded), key=_RANK.__getitem__, default=HEALTHY)
        if worst == HEALTHY:
            return HEALTHY, None
        # the worst conditions' reasons first, then the milder ones (a full spool disk while
        # S3 is failing is a second cause to act on, not a detail)
        ordered = sorted(
            (pair for pair in graded if pair[0] != HEALTHY),
            key=lambda pair: -_RANK[pair[0]],
        )
        return worst, "; ".join(reason for _, reason in ordered)

    def behind(self) -> list[str]:
        """The names of the conditions behind the health (those of its severity), sorted."""
        now = self._clock()
        with self._lock:
            graded = {s: self._severity(c, now) for s, c in self._conditions.items()}
        worst = max(graded.values(), key=_RANK.__getitem__, default=HEALTHY)
        return [] if worst == HEALTHY else sorted(s for s, v in graded.items() if v == worst)

    def log_change(self) -> None:
        """Log the health when it or the set of conditions behind it changed (a reason that
        only updates its numbers, such as an attempt count, is not logged again; conditions
        still within their `degraded_after` are behind no state, so healthy is logged once)."""
        now = self._clock()
        health, reason = self.state()
        with self._lock:
            behind = ",".join(
                sorted(
                    s
                    for s, c in self._conditions.items()
                    if health != HEALTHY and self._severity(c, now) == health
                )
            )
            if (health, behind) == self._logged:
                return
            self._logged = (health, behind)
        if health == HEALTHY:
            log.info("health: healthy")
        elif health == DEGRADED:
            log.warning("health: degraded: %s", reason)
        else:
            log.error("health: failing: %s", reason)


def x_problem_reason(status: int | None, problem: dict | None) -> str:
    """X's own words for a refusal: `HTTP 429 UsageCapExceeded: Usage cap exceeded: ...`.

    X API v2 answers errors with a problem object (title, detail, type; streaming problems
    add connection_issue): https://docs.x.com/x-api/fundamentals/response-codes-and-errors
    """
    problem = problem or {}
    title = problem.get("connection_issue") or problem.get("title") or "error"
    if problem.get("title") and problem.get("connection_issue"):
        title = f"{problem['title']} ({problem['connection_issue']})"
    detail = problem.get("detail") or problem.get("reason") or ""
    prefix = f"HTTP {status} " if status else ""
    return f"{prefix}{title}: {detail}".rstrip(": ") if detail else f"{prefix}{title}"


def x_response_reason(response) -> str:
    """X's own words for a refused request (a requests.Response): its problem's title, with its
    errors' messages joined as the detail when it names any (search and counts answer 400 with
    `errors[].message`), as x_problem_reason writes them. A body that is not JSON counts as none.
    """
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    problem = problem if isinstance(problem, dict) else {}
    messages = [e.get("message") for e in problem.get("errors") or [] if isinstance(e, dict)]
    if any(messages):
        problem = {**problem, "detail": "; ".join(m for m in messages if m)}
    return x_problem_reason(response.status_code, problem)
