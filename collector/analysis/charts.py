"""The report's charts, drawn with matplotlib as PNG: posts over time (a bar per minute, hour or
day: bucket_for) with the gaps shaded behind the bars, and the top-N rankings."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from collector.analysis.gaps import NO_POSTS, NOT_COLLECTING, PAUSED_BUDGET, QUIET, GapAccount
from collector.analysis.loader import Period

if TYPE_CHECKING:
    from collector.analysis.report import Figures

log = logging.getLogger(__name__)


# The time charts' bucket follows the period so a chart has 1 to about 180 bars.
BUCKETS = (
    ("minute", timedelta(minutes=1)),
    ("hour", timedelta(hours=1)),
    ("day", timedelta(days=1)),
)


MINUTE_BUCKETS_UP_TO = timedelta(hours=3)  # 180 bars at most


HOUR_BUCKETS_UP_TO = timedelta(days=7)  # 168 bars at most; longer periods: one bar a day


def bucket_for(period: Period) -> tuple[str, timedelta]:
    """("minute"|"hour"|"day", its length) for a period's time charts."""
    span = period.end - period.start
    if span <= MINUTE_BUCKETS_UP_TO:
        return BUCKETS[0]
    if span <= HOUR_BUCKETS_UP_TO:
        return BUCKETS[1]
    return BUCKETS[2]


def floor_time(value: datetime, step: timedelta) -> datetime:
    """`value` rounded down to a multiple of `step` since the Unix epoch (UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (value.astimezone(UTC) - epoch) // step * step


DATA_COLOUR = "#1d9bf0"  # every bar; tests count its pixels


REPAIRED_COLOUR = "#8e6bd8"  # posts fetched again by gap repair, stacked on the streamed ones


REPAIRED_LABEL = "fetched again by gap repair"


# Behind the bars of the time chart, so a gap and a quiet spell do not look alike.
SPAN_COLOURS = {
    NOT_COLLECTING: "#f4a6a6",
    PAUSED_BUDGET: "#c6b3e6",
    QUIET: "#fde8a8",
    NO_POSTS: "#d9d9d9",
    "before collection / after the last stop": "#ececec",
}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def chart_spans(gaps: GapAccount | None) -> list[tuple[datetime, datetime, str]]:
    """(start, end, kind) shaded behind the time chart: the gaps (not collecting, quiet, no
    posts), then the time before collection and after the last stop (SPAN_COLOURS' keys)."""
    if gaps is None:
        return []
    spans = [(g.start, g.end, g.kind) for g in gaps.gaps]
    outside = "before collection / after the last stop"
    for edge in (gaps.before_collection, gaps.after_collection):
        if edge and edge[0] < edge[1]:
            spans.append((edge[0], edge[1], outside))
    return spans


def _time_chart(
    points: list[tuple[datetime, int]],
    title: str,
    period: Period,
    spans: Sequence[tuple[datetime, datetime, str]] = (),
    repaired: Sequence[tuple[datetime, int]] = (),
) -> bytes:
    """Bars of posts per bucket; the x axis covers the whole period (whole buckets), in UTC.
    `spans` (chart_spans) are shaded behind the bars, with a legend; the `repaired` part of
    each bar (posts fetched again by gap repair) is a shade of its own on top."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    unit, step = bucket_for(period)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    labelled = set()
    for start, end, kind in spans:
        label = None if kind in labelled else kind
        labelled.add(kind)
        # matplotlib converts datetimes and timedeltas through its date units; its stubs say float
        ax.axvspan(start, end, color=SPAN_COLOURS[kind], linewidth=0, zorder=0, label=label)  # type: ignore[arg-type]
    fetched = dict(repaired)
    ax.bar(
        [t for t, _ in points], [n - fetched.get(t, 0) for t, n in points], width=step,  # type: ignore[arg-type]
        align="edge", color=DATA_COLOUR, linewidth=0,
    )  # fmt: skip
    if fetched:
        streamed = {t: n - fetched.get(t, 0) for t, n in points}
        ax.bar(
            list(fetched), list(fetched.values()), bottom=[streamed.get(t, 0) for t in fetched],  # type: ignore[arg-type]
            width=step, align="edge", color=REPAIRED_COLOUR, linewidth=0, label=REPAIRED_LABEL,  # type: ignore[arg-type]
        )  # fmt: skip
        labelled.add(REPAIRED_LABEL)
    left = floor_time(period.start, step)
    right = floor_time(period.end - timedelta(microseconds=1), step) + step
    ax.set_xlim(left, right)  # type: ignore[arg-type]  # datetimes, as above
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
    ax.set_title(title)
    ax.set_ylabel(f"posts per {unit}")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
    return _png(fig)


def _ranking_chart(rows: list[tuple[str, int]], title: str) -> bytes:
    import matplotlib.pyplot as plt

    rows = list(reversed(rows))
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.3 * len(rows) + 1)))
    ax.barh([str(label)[:48] for label, _ in rows], [n for _, n in rows], color=DATA_COLOUR)
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
    ax.set_title(title)
    ax.set_xlabel("posts")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def author_label(username: str, author_id: str) -> str:
    return f"@{username} ({author_id})" if username else f"id {author_id}"


def render_charts(
    figures: Figures, period: Period, gaps: GapAccount | None = None
) -> dict[str, tuple[str, bytes]]:
    """name -> (title, PNG bytes); a chart with nothing to show is left out. The gaps are
    shaded on the posts-over-time chart."""
    import matplotlib

    matplotlib.use("Agg")
    # Labels are posts' data (hashtags, rule tags, usernames): "$...$" is text, never mathtext.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _render_charts(figures, period, gaps)


def _render_charts(figures: Figures, period: Period, gaps: GapAccount | None):
    charts = {}
    if figures.posts_per_bucket:
        title = f"Posts per {figures.bucket}"
        chart = _time_chart(
            figures.posts_per_bucket, title, period, chart_spans(gaps), figures.repaired_per_bucket
        )
        charts["posts_over_time"] = (title, chart)
    rankings = [
        ("post_types", "Post types", figures.post_types),
        ("authors", "Top authors", [(author_label(u, i), n) for u, i, n in figures.authors]),
        ("rules", "Posts per rule tag", figures.rules),
        ("hashtags", "Top hashtags", figures.hashtags),
        ("mentions", "Top mentioned accounts", [(f"@{u}", n) for u, n in figures.mentions]),
        ("domains", "Top linked domains", figures.domains),
        ("languages", "Languages", figures.languages),
    ]
    for name, title, rows in rankings:
        if any(n for _, n in rows):
            charts[name] = (title, _ranking_chart(rows, title))
    return charts
