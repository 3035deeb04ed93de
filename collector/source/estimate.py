"""`collector rules estimate`: what the configured rules would cost, from X's post counts.

For each rule, one request to X's counts endpoint (`GET /2/tweets/counts/recent`, the last
7 days, granularity day or hour: https://docs.x.com/x-api/posts/counts/introduction) through
tweepy's `Client.get_recent_tweets_count`; the posts a day it implies, the USD a day and per
30 days at budget.usd_per_post, the day the monthly cap (3,000,000 post reads on
pay-per-use) would be reached, and whether the budget holds. The answer's count fields are
read in both spellings (`tweet_count`/`total_tweet_count`, and `post_count`/`total_post_count`
of OpenAPI 2.167).

Counts speak search syntax, not stream syntax: a rule with a stream-only operator (`bio:`,
`sample:`, ...) or longer than the access level's search query limit is reported as "cannot
be estimated", never sent. Counting costs money too (Counts: Recent, $0.005 per request,
https://docs.x.com/x-api/getting-started/pricing): the caller asks before more than
ASK_ABOVE requests.

The total is an upper bound: a post matching two rules is delivered (and billed) once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
import tweepy

from collector.config import BudgetConfig, Config
from collector.source.pricing import MONTHLY_CAP, USD_PER_COUNTS_REQUEST
from collector.source.repair import not_repairable_reason, search_query_max_length
from collector.source.stream import point_at_base_url
from collector.telemetry.health import x_response_reason

log = logging.getLogger(__name__)

ASK_ABOVE = 10  # requests: more than this needs a yes
DAYS_PER_CYCLE = 30
BUCKET_SECONDS = {"day": 86400, "hour": 3600}


class CountsError(Exception):
    """X refused the counts request or could not be asked (one line, X's own words)."""


def count_of(row: dict) -> int:
    """A bucket's or meta's count, in either spelling X uses."""
    for name in ("tweet_count", "post_count", "total_tweet_count", "total_post_count"):
        if isinstance(row.get(name), int):
            return row[name]
    raise CountsError(f"X's counts answer has no count field: {sorted(row)}")


class CountsClient:
    """tweepy's Client.get_recent_tweets_count pointed at x.api_base_url."""

    def __init__(self, cfg: Config, token: str) -> None:
        client = tweepy.Client(token, return_type=dict, wait_on_rate_limit=True)
        self.client = point_at_base_url(client, cfg)
        self.requests = 0

    def posts_per_day(self, query: str, granularity: str = "day") -> tuple[float, int, float]:
        """(posts a day, posts counted, days counted) for `query` over X's last 7 days: the
        whole buckets' posts over their days (the first and last bucket are partial)."""
        self.requests += 1
        try:
            answer = self.client.get_recent_tweets_count(query, granularity=granularity) or {}
        except tweepy.HTTPException as exc:
            raise CountsError(_reason(exc)) from None
        except requests.RequestException as exc:
            raise CountsError(f"X could not be asked: {type(exc).__name__}: {exc}") from None
        rows = answer.get("data") or []
        meta = answer.get("meta") or {}
        total = count_of(meta) if meta else sum(count_of(r) for r in rows)
        if not rows:
            return 0.0, total, 0.0
        # Whole buckets only: X cuts the first and last at the window's ends, and a part of a
        # day is not a fair sample of a whole one.
        whole = [r for r in rows if _length(r) == BUCKET_SECONDS[granularity]]
        if whole:
            counted = sum(count_of(r) for r in whole)
            days = len(whole) * BUCKET_SECONDS[granularity] / 86400
        else:
            counted, days = total, sum(_length(r) for r in rows) / 86400
        days = max(days, 1 / 1440)
        return counted / days, counted, days


def _length(row: dict) -> float:
    return (_parse(row["end"]) - _parse(row["start"])).total_seconds()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _reason(exc: tweepy.HTTPException) -> str:
    return x_response_reason(exc.response)


@dataclass
class RuleEstimate:
    tag: str
    value: str
    posts_per_day: float | None = None  # None: not estimated (reason says why)
    reason: str | None = None

    def usd_per_day(self, budget: BudgetConfig) -> float:
        return (self.posts_per_day or 0.0) * budget.usd_per_post


@dataclass
class Estimate:
    budget: BudgetConfig
    rules: list[RuleEstimate] = field(default_factory=list)
    requests: int = 0

    @property
    def posts_per_day(self) -> float:
        return sum(r.posts_per_day or 0.0 for r in self.rules)

    @property
    def usd_per_day(self) -> float:
        return self.posts_per_day * self.budget.usd_per_post

    @property
    def usd_per_30_days(self) -> float:
        return self.usd_per_day * DAYS_PER_CYCLE

    @property
    def cap_day(self) -> float | None:
        """Days into a cycle at which the monthly cap is reached (None: not within 30 days)."""
        if self.posts_per_day <= 0:
            return None
        days = MONTHLY_CAP / self.posts_per_day
        return days if days <= DAYS_PER_CYCLE else None

    @property
    def not_estimated(self) -> list[RuleEstimate]:
        """The rules X's counts endpoint cannot estimate (a stream-only operator, too long)."""
        return [r for r in self.rules if r.reason is not None]

    def verdict(self) -> str:
        """`holds`, `exceeded`, `unknown` (within the budget, but rules left out: their posts
        are billed too) or `none` (no budget set)."""
        if not self.budget.limited:
            return "none"
        if self.over_budget():
            return "exceeded"  # the rules estimated alone exceed it
        return "unknown" if self.not_estimated else "holds"

    def over_budget(self) -> list[str]:
        """One line per budget limit the forecast passes (empty: the budget holds)."""
        budget, lines = self.budget, []
        if budget.posts_per_day is not None and self.posts_per_day > budget.posts_per_day:
            hours = 24 * budget.posts_per_day / self.posts_per_day
            after = f"{hours:.1f} h" if hours >= 1 else f"{max(1, round(60 * hours))} min"
            lines.append(
                f"{self.posts_per_day:,.0f} posts a day is over posts_per_day "
                f"{budget.posts_per_day:,}: the collector would pause each UTC day after about "
                f"{after}"
            )
        if budget.usd_per_month is not None and self.usd_per_30_days > budget.usd_per_month:
            days = budget.usd_per_month / self.usd_per_day
            lines.append(
                f"${self.usd_per_30_days:,.2f} per 30 days is over usd_per_month "
                f"${budget.usd_per_month:,.2f}: spent after about {days:.1f} days of a cycle"
            )
        return lines

    def to_json(self) -> dict:
        budget = self.budget
        return {
            "rules": [
                {
                    "tag": r.tag,
                    "value": r.value,
                    "posts_per_day": None if r.posts_per_day is None else round(r.posts_per_day),
                    "usd_per_day": None if r.reason else round(r.usd_per_day(budget), 2),
                    "usd_per_30_days": None
                    if r.reason
                    else round(r.usd_per_day(budget) * DAYS_PER_CYCLE, 2),
                    "cannot_be_estimated": r.reason,
                }
                for r in self.rules
            ],
            "total_posts_per_day": round(self.posts_per_day),
            "total_usd_per_day": round(self.usd_per_day, 2),
            "total_usd_per_30_days": round(self.usd_per_30_days, 2),
            "monthly_cap_day": None if self.cap_day is None else round(self.cap_day, 1),
            "usd_per_post": budget.usd_per_post,
            "over_budget": self.over_budget(),
            "not_estimated": len(self.not_estimated),
            "budget_verdict": self.verdict(),
            "counts_requests": self.requests,
            "counts_usd": round(self.requests * USD_PER_COUNTS_REQUEST, 3),
        }


def plan(cfg: Config) -> tuple[list[RuleEstimate], list[RuleEstimate]]:
    """(rules to ask X about, rules that cannot be estimated with the reason)."""
    limit = search_query_max_length(cfg)
    asked, refused = [], []
    for rule in cfg.x.rules:
        value, tag = rule.value, rule.tag or rule.value
        reason = not_repairable_reason(value, limit)
        if reason is not None:
            reason = reason.replace("recent search refuses it", "the counts endpoint refuses it")
            refused.append(RuleEstimate(tag, value, reason=f"cannot be estimated: {reason}"))
        else:
            asked.append(RuleEstimate(tag, value))
    return asked, refused


def estimate(
    cfg: Config,
    client: CountsClient,
    granularity: str = "day",
    confirm: Callable[[int], bool] = lambda requests: True,
) -> Estimate | None:
    """The estimate; None when `confirm(requests)` declines. CountsError when X refuses."""
    asked, refused = plan(cfg)
    if len(asked) > ASK_ABOVE and not confirm(len(asked)):
        return None
    result = Estimate(cfg.budget)
    for rule in asked:
        rule.posts_per_day, _, _ = client.posts_per_day(rule.value, granularity)
        result.requests = client.requests
    result.rules = asked + refused
    return result


def render(result: Estimate) -> list[str]:
    """The lines `rules estimate` prints: one per rule, the total, the cap and the budget."""
    budget = result.budget
    lines = [
        f"{'posts/day':>11} {'USD/day':>10} {'USD/30 days':>12}  rule "
        f"(X's counts of the last 7 days, ${budget.usd_per_post} a post)"
    ]
    for rule in result.rules:
        if rule.reason is not None:
            lines.append(f"{'-':>11} {'-':>10} {'-':>12}  {rule.tag}: {rule.reason}")
            continue
        usd = rule.usd_per_day(budget)
        lines.append(
            f"{rule.posts_per_day:>11,.0f} {usd:>10,.2f} {usd * DAYS_PER_CYCLE:>12,.2f}  "
            f"{rule.tag}: {rule.value}"
        )
    left_out = len(result.not_estimated)
    total = (
        f"total of the rules estimated; it leaves out {left_out} rule(s) that cannot be "
        "estimated, whose posts are billed too"
        if left_out
        else "total (an upper bound: rules overlap, and a post matching several rules is "
        "billed once)"
    )
    lines.append(
        f"{result.posts_per_day:>11,.0f} {result.usd_per_day:>10,.2f} "
        f"{result.usd_per_30_days:>12,.2f}  {total}"
    )
    cap = result.cap_day
    if cap is not None:
        lines.append(
            f"monthly cap: X's {MONTHLY_CAP:,} post reads would be reached on day "
            f"{math.ceil(cap)} of a billing cycle ({cap:.1f} days); X then refuses the stream "
            "(429 UsageCapExceeded) until the next cycle"
        )
    elif result.posts_per_day > 0:
        share = 100 * result.posts_per_day * DAYS_PER_CYCLE / MONTHLY_CAP
        lines.append(f"monthly cap: {share:.1f} % of X's {MONTHLY_CAP:,} post reads in 30 days")
    over = result.over_budget()
    if not budget.limited:
        lines.append("budget: none set ([budget] posts_per_day, usd_per_month)")
    elif over:
        lines.extend(f"budget: exceeded: {line}" for line in over)
    elif left_out:
        lines.append(
            f"budget: unknown for {left_out} rule(s) that cannot be estimated (the others hold "
            "it); watch the first day's spend in collector status"
        )
    else:
        lines.append("budget: holds")
    lines.append(
        f"this estimate: {result.requests} request(s) to X's counts endpoint, "
        f"${result.requests * USD_PER_COUNTS_REQUEST:.3f} (Counts: Recent, "
        f"${USD_PER_COUNTS_REQUEST} a request)"
    )
    return lines
