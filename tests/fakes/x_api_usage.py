"""X's usage endpoints, as the stand-in answers them (loaded by tests.fakes.x_server).

    GET /2/usage/tweets[?usage.fields=...&days=N]
        {"data": {"project_id", "project_cap", "project_usage", "cap_reset_day",
                  "daily_project_usage": {"project_id", "usage": [{"date", "usage"}]}}}
    GET /2/usage/credits
        {"data": {"total_balance", "prepaid_balance", "free_balance"}}, or an empty 404

Shapes from X's OpenAPI (xdevplatform/docs openapi.json 2.167, `Usage` and
`UsageDailyProjectUsage`): project_cap, project_usage and each day's usage are strings; a day's
`date` is an ISO 8601 date-time; `days` is 1-90 (default 7). Without usage.fields X answers
the four fields of its documentation's example (docs.x.com/x-api/usage/tweets: cap_reset_day,
project_cap, project_id, project_usage); with it, exactly the fields asked for.
`cap_reset_day` is "Number of days left for the Tweet cap to reset" (the description of the
first OpenAPI in xdevplatform/docs; later versions keep only the integer type).

The usage is the stand-in's bill (`fake.billed`: unique posts per UTC day): project_usage sums
the days of the current billing cycle, which starts on `usage_cycle_day` of each month (the
project's sign-up day on X; default 1). X counts a post once per UTC day, so a post delivered
again the next day counts again, here as there.

/2/usage/credits: field names from X's reference page "Get usage credits"
(xdevplatform/docs x-api/usage/get-usage-credits.mdx, 2026-08), balances in US dollars. The
stored OpenAPI (2.167) does not describe the answer yet and some pay-per-use projects get a 404
with an empty body (public reports); `usage_credits: null` answers that 404 here.

Rate limits as X documents them: /2/usage/tweets 50 requests per 15 minutes per app,
/2/usage/credits 30: beyond them 429 with X's rate-limit problem and x-rate-limit-* headers.

Knobs (FakeXServer.control or POST /_fake/control):
    usage_cap N                   project_cap (default 3,000,000: pay-per-use since 2026-08-13)
    usage_cycle_day D             the day of the month a billing cycle starts (1-28)
    usage_credits {...} | null    the balances /2/usage/credits answers (null: empty 404)
Stats: usage_requests, usage_credits_requests.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

from tests.fakes.x_server import _invalid_request, knob, route, stats_part

FAMILY = "usage"
PROJECT_ID = "1369785403853424"  # the project id of X's documentation example
PAY_PER_USE_CAP = 3_000_000
FIELDS = (
    "cap_reset_day",
    "daily_client_app_usage",
    "daily_project_usage",
    "project_cap",
    "project_id",
    "project_usage",
)
DEFAULT_FIELDS = ("cap_reset_day", "project_cap", "project_id", "project_usage")
WINDOW = 15 * 60.0  # s: X's rate-limit window
LIMITS = {"tweets": 50, "credits": 30}  # requests per window, per app


class UsageState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cap = PAY_PER_USE_CAP
        self.cycle_day = 1
        self.credits: dict | None = {
            "total_balance": 25.0,
            "prepaid_balance": 20.0,
            "free_balance": 5.0,
        }
        self.requests: dict[str, list[float]] = {"tweets": [], "credits": []}  # in the window
        self.totals = {"tweets": 0, "credits": 0}


def state(fake) -> UsageState:
    with fake._lock:
        return fake.ext.setdefault(FAMILY, UsageState())


def cycle_start(today: date, cycle_day: int) -> date:
    """The first day of the billing cycle `today` is in."""
    start = today.replace(day=cycle_day)
    if start > today:
        start = (start.replace(day=1) - timedelta(days=1)).replace(day=cycle_day)
    return start


def next_cycle_start(today: date, cycle_day: int) -> date:
    start = cycle_start(today, cycle_day)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=cycle_day)


def usage_data(fake, fields: tuple[str, ...], days: int) -> dict:
    """The `data` object of GET /2/usage/tweets, from the stand-in's bill."""
    usage = state(fake)
    today = datetime.fromtimestamp(fake.clock(), UTC).date()
    start = cycle_start(today, usage.cycle_day)
    with fake._lock:
        per_day = {day: len(ids) for day, ids in fake.billed.items()}
    in_cycle = sum(n for day, n in per_day.items() if date.fromisoformat(day) >= start)
    data: dict = {
        "cap_reset_day": (next_cycle_start(today, usage.cycle_day) - today).days,
        "project_cap": str(usage.cap),
        "project_id": PROJECT_ID,
        "project_usage": str(in_cycle),
    }
    recent = [today - timedelta(days=back) for back in range(days - 1, -1, -1)]
    data["daily_project_usage"] = {
        "project_id": PROJECT_ID,
        "usage": [
            {"date": f"{day.isoformat()}T00:00:00.000Z", "usage": str(per_day.get(str(day), 0))}
            for day in recent
        ],
    }
    data["daily_client_app_usage"] = []
    return {name: data[name] for name in fields}


def _limited(handler, family: str) -> bool:
    """Count the request; answer X's 429 and return True beyond the window's limit."""
    usage = state(handler.fake)
    now = handler.fake.clock()
    with usage.lock:
        recent = [t for t in usage.requests[family] if now - t < WINDOW] + [now]
        usage.requests[family] = recent
        usage.totals[family] += 1
        over = len(recent) > LIMITS[family]
    if not over:
        return False
    reset = int(min(recent) + WINDOW)
    headers = {
        "x-rate-limit-limit": str(LIMITS[family]),
        "x-rate-limit-remaining": "0",
        "x-rate-limit-reset": str(reset),
    }
    problem = {"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank",
               "status": 429}  # fmt: skip
    handler.send_json(429, problem, headers)
    return True


@route("GET", "/2/usage/tweets")
def get_usage(handler, params: dict) -> None:
    if not handler.authorized() or _limited(handler, "tweets"):
        return
    query = handler.query
    asked = [f for part in query.get("usage.fields", []) for f in part.split(",") if f]
    unknown = [name for name in asked if name not in FIELDS]
    days_text = (query.get("days") or ["7"])[0]
    if unknown:
        message = f"The `usage.fields` query parameter value [{unknown[0]}] is not one of " + (
            f"[{','.join(FIELDS)}]"
        )
        handler.send_json(400, _invalid_request(message))
        return
    if not days_text.isdigit() or not 1 <= int(days_text) <= 90:
        message = f"The `days` query parameter value [{days_text}] is not between 1 and 90"
        handler.send_json(400, _invalid_request(message))
        return
    fields = tuple(dict.fromkeys(asked)) or DEFAULT_FIELDS
    handler.send_json(200, {"data": usage_data(handler.fake, fields, int(days_text))})


@route("GET", "/2/usage/credits")
def get_credits(handler, params: dict) -> None:
    if not handler.authorized() or _limited(handler, "credits"):
        return
    credits = state(handler.fake).credits
    if credits is None:
        handler.send_empty(404)
        return
    handler.send_json(200, {"data": dict(credits)})


@knob("usage_cap")
def _cap(fake, value) -> None:
    state(fake).cap = int(value)


@knob("usage_cycle_day")
def _cycle_day(fake, value) -> None:
    if not 1 <= int(value) <= 28:
        raise ValueError("usage_cycle_day must be 1-28")
    state(fake).cycle_day = int(value)


@knob("usage_credits")
def _credits(fake, value) -> None:
    state(fake).credits = None if value is None else dict(value)


@stats_part
def _stats(fake) -> dict:
    usage = fake.ext.get(FAMILY)
    if usage is None:
        return {"usage_requests": 0, "usage_credits_requests": 0}
    with usage.lock:
        return {
            "usage_requests": usage.totals["tweets"],
            "usage_credits_requests": usage.totals["credits"],
        }
