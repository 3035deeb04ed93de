"""What X says the project used and holds: GET /2/usage/tweets and GET /2/usage/credits.

    usage = post_usage(cfg, token)        # PostUsage(project_usage=1234, project_cap=3000000, ...)
    usage.cap_resets_on(date.today())     # datetime.date the monthly cap lifts
    balance = credits(cfg, token)         # Credits(total_balance=Decimal("12.5"), ...) or None

Each call costs nothing on X's bill (usage reads are not post reads) but counts against X's
per-app rate limits: /2/usage/tweets 50 requests per 15 minutes, /2/usage/credits 30
(docs.x.com/x-api/usage/introduction, docs.x.com/x-api/fundamentals/rate-limits).

The requests go through tweepy's Client.request, the same library, session and error mapping
as the stream and the rules (401 Unauthorized, 403 Forbidden, 404 NotFound, 429 TooManyRequests,
5xx TwitterServerError): tweepy 4.17 has no method for the usage endpoints, and X's SDK `xdk`,
which has them, would add a second X client and its dependencies to the instance for two GETs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

import requests
import tweepy

from collector.config import Config
from collector.errors import XNotAvailable, XRequestError
from collector.source.stream import point_at_base_url

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0  # s: connect and read, per request

USAGE_FIELDS = (
    "project_id",
    "project_cap",
    "project_usage",
    "cap_reset_day",
    "daily_project_usage",
)


@dataclass(frozen=True)
class PostUsage:
    """GET /2/usage/tweets: posts read by the project in the current billing cycle.

    project_usage and project_cap are posts (X sends them as strings); cap_reset_day is the
    number of days until the cap resets (X's OpenAPI: "Number of days left for the Tweet cap to
    reset"); daily maps a UTC day "YYYY-MM-DD" to the posts read that day; api_version is X's
    `api-version` response header.
    """

    project_id: str | None
    project_usage: int | None
    project_cap: int | None
    cap_reset_day: int | None
    daily: dict[str, int] = field(default_factory=dict)
    api_version: str | None = None

    def cap_resets_on(self, today: date) -> date | None:
        """The UTC day the monthly cap lifts, `today` + cap_reset_day (None when not given)."""
        return None if self.cap_reset_day is None else today + timedelta(days=self.cap_reset_day)


@dataclass(frozen=True)
class Credits:
    """GET /2/usage/credits: the pay-per-use balances, in US dollars (may be slightly negative:
    X lets a balance run below zero before it refuses)."""

    total_balance: Decimal | None
    prepaid_balance: Decimal | None
    free_balance: Decimal | None
    api_version: str | None = None


def _client(cfg: Config, token: str) -> tweepy.Client:
    return point_at_base_url(tweepy.Client(bearer_token=token), cfg, REQUEST_TIMEOUT)


def _get(cfg: Config, token: str, route: str, params: dict | None = None) -> requests.Response:
    """tweepy's request; X's refusals as XRequestError/XNotAvailable naming the endpoint."""
    try:
        return _client(cfg, token).request("GET", route, params=params)
    except (tweepy.NotFound, tweepy.Forbidden) as exc:
        raise XNotAvailable(_line(route, exc), exc.response.status_code) from None
    except tweepy.HTTPException as exc:
        raise XRequestError(_line(route, exc), exc.response.status_code) from None
    except requests.RequestException as exc:
        raise XRequestError(f"X API {route}: {type(exc).__name__}: {exc}") from None


def _line(route: str, exc: tweepy.HTTPException) -> str:
    said = "; ".join(str(m) for m in exc.api_messages) or exc.response.reason or "no body"
    return f"X API {route}: HTTP {exc.response.status_code}: {said}".replace("\n", " ")


def _int(value) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _money(value) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


def post_usage(cfg: Config, token: str, days: int = 7) -> PostUsage:
    """The project's post usage (GET /2/usage/tweets, the last `days` days, 1-90).

    Raises XNotAvailable (404/403: not available to the project) or XRequestError (network,
    401, 429 rate limit, 5xx).
    """
    response = _get(
        cfg, token, "/2/usage/tweets", {"usage.fields": ",".join(USAGE_FIELDS), "days": days}
    )
    data = (response.json() or {}).get("data") or {}
    entries = (data.get("daily_project_usage") or {}).get("usage") or []
    daily = {
        str(entry.get("date", ""))[:10]: _int(entry.get("usage")) or 0
        for entry in entries
        if isinstance(entry, dict) and entry.get("date")
    }
    return PostUsage(
        project_id=data.get("project_id"),
        project_usage=_int(data.get("project_usage")),
        project_cap=_int(data.get("project_cap")),
        cap_reset_day=_int(data.get("cap_reset_day")),
        daily=daily,
        api_version=response.headers.get("api-version"),
    )


def credits(cfg: Config, token: str) -> Credits | None:
    """The pay-per-use balances (GET /2/usage/credits); None when X answers 404 (some
    pay-per-use projects get an empty 404). Raises XRequestError otherwise."""
    try:
        response = _get(cfg, token, "/2/usage/credits")
    except XNotAvailable as exc:
        if exc.status == 404:
            return None
        raise
    data = (response.json() or {}).get("data") or {}
    return Credits(
        total_balance=_money(data.get("total_balance")),
        prepaid_balance=_money(data.get("prepaid_balance")),
        free_balance=_money(data.get("free_balance")),
        api_version=response.headers.get("api-version"),
    )
