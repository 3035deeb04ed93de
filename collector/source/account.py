"""X's account-level refusals of the stream: what each means, what to do, when to try again.

    state = account_state(402, {"title": "CreditsDepleted", ...})   # ACCOUNT_STATES["credits"]
    state.reason, state.remedy, state.retry_seconds                  # shown, shown, 300.0

One table (ACCOUNT_STATES) maps X's answer (HTTP status, problem `title`/`type`/`detail`,
`connection_issue`) to a health state, the reason and remedy `collector status` shows, and the
retry policy the stream reader follows instead of tweepy's backoff. X sends problem types under
both api.twitter.com and api.x.com: rows match on the status and the title (or the words of the
detail), never on the host. 401/403 stay fatal (collector.source.stream.FATAL_STATUSES).

Sources:
- 402 credits: X's pay-per-use balance is spent. Two bodies are seen in public reports: title
  "CreditsDepleted", type .../problems/credits (koala73/worldmonitor#7156, client code quoting
  X's 402) and title "Payment Required", detail "credits depleted", type
  .../problems/credits-depleted. Auto-recharge tops the balance up at most once per 5 minutes
  (docs.x.com/x-api/getting-started/pricing): retried every 5 minutes, resumed by itself.
- Spending limit: "When the limit is reached, API requests will be blocked until the next
  billing cycle" (xdevplatform/docs x-api/getting-started/pricing.mdx). X documents no body for
  it, so the row recognises X's own words ("spending limit", "spend limit", "spend cap") in the
  title or detail of a 402, 403 or 429, and is checked before the credits row.
- 429 UsageCapExceeded, period Monthly (body in xdevplatform/xdk#25): the monthly post cap;
  nothing is collected until the cycle resets (GET /2/usage/tweets cap_reset_day): retried
  hourly.
- 429 TooManyConnections (connection_issue; tweepy#1962, xdevplatform/samples#140): X still
  counts a connection whose client died; the Connections API (GET /2/connections, DELETE
  /2/connections, 2025-09) ends it (collector.source.connections).
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.telemetry.health import FAILING

SPENDING_WORDS = ("spending limit", "spend limit", "spend cap", "spendinglimit", "spending-limit")


@dataclass(frozen=True)
class AccountState:
    """One of X's account-level refusals and how the collector lives with it.

    key: a stable name ("credits", "spending-limit", "usage-cap", "too-many-connections");
    health: the state shown at once; reason/remedy: the words `collector status` shows;
    retry_seconds: the wait between connection attempts (None: tweepy's own backoff);
    lifts_with_cycle: the reason names the day the billing cycle resets (GET /2/usage/tweets);
    name: the machine-readable `x_account_state` of status.json ("credits_depleted", ...);
    repaired_automatically: False when gap repair must leave the refused span to a repair by
    hand (collector.source.repair): X refused for money, and a repair is billed too.
    """

    key: str
    health: str
    reason: str
    remedy: str
    retry_seconds: float | None
    lifts_with_cycle: bool = False
    name: str = ""
    repaired_automatically: bool = False


ACCOUNT_STATES: dict[str, AccountState] = {
    state.key: state
    for state in (
        AccountState(
            "credits",
            FAILING,
            "X credits depleted (pay-per-use balance)",
            "add credits or enable auto-recharge in the X Developer Console; the collector "
            "tries again every 5 minutes and resumes by itself",
            300.0,
            name="credits_depleted",
        ),
        AccountState(
            "spending-limit",
            FAILING,
            "X spending limit reached for this billing cycle",
            "raise the spending limit in the X Developer Console, or wait for the next cycle; "
            "the collector tries again every hour",
            3600.0,
            lifts_with_cycle=True,
            name="spending_limit",
        ),
        AccountState(
            "usage-cap",
            FAILING,
            "X monthly cap reached",
            "nothing is collected until the cap lifts (Enterprise access has higher caps); "
            "the collector tries again every hour",
            3600.0,
            lifts_with_cycle=True,
            name="monthly_cap",
        ),
        AccountState(
            "too-many-connections",
            FAILING,
            "X refused the connection (TooManyConnections): the app is at its connection limit",
            "a stale connection X still counts is ended through X's Connections API when "
            "x.clear_stale_connections = true; otherwise stop the other client of this app",
            None,
            name="too_many_connections",
            repaired_automatically=True,  # seconds, and nothing to do with money
        ),
    )
}


def _words(problem: dict) -> str:
    return " ".join(str(problem.get(k) or "") for k in ("title", "detail", "type")).lower()


def account_state(status: int, problem: dict | None) -> AccountState | None:
    """The ACCOUNT_STATES row of X's refusal (status, problem JSON), or None for other answers."""
    problem = problem or {}
    title = str(problem.get("title") or "")
    words = _words(problem)
    if status in (402, 403, 429) and any(w in words for w in SPENDING_WORDS):
        return ACCOUNT_STATES["spending-limit"]
    if status == 402:
        return ACCOUNT_STATES["credits"]
    if status == 429 and (title == "UsageCapExceeded" or "usage-capped" in words):
        return ACCOUNT_STATES["usage-cap"]
    if status == 429 and problem.get("connection_issue") == "TooManyConnections":
        return ACCOUNT_STATES["too-many-connections"]
    return None
