"""The report over 1 minute to 10 days of posts: charts drawn, counts exact, a browser shows it.

Objects are written in the collector's layout into the report's cache and read with --offline;
the posts carry chosen times, authors (includes.users), post types and linked URLs.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from collector.analysis import report
from collector.spool.layout import data_file_name, object_key
from tests.bench.report_bench import post_line, templates

BUCKET = "periods-bucket"
PREFIX = "tweets"
START = datetime(2026, 11, 20, 10, 0, 7, tzinfo=UTC)
MINUTE = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
AUTHORS = [(str(10**9 + k), f"author_{k}") for k in range(12)]
TYPES = ["original", "original", "reply", "quote", "repost"]
DOMAINS = ["example.org", "news.example.com", "www.data.example.net"]
DATA_RGB = tuple(int(report.DATA_COLOUR[i : i + 2], 16) for i in (1, 3, 5))


@dataclass
class Collection:
    name: str
    span: timedelta
    posts: int
    bucket: str
    step: timedelta
    start: datetime = START


CASES = [
    # One minute bucket only: it is still drawn, over the whole axis.
    Collection("1-minute", timedelta(minutes=1), 30, "minute", timedelta(minutes=1), MINUTE),
    Collection("3-hour", timedelta(hours=3), 540, "minute", timedelta(minutes=1)),
    Collection("2-day", timedelta(days=2), 480, "hour", timedelta(hours=1)),
    Collection("10-day", timedelta(days=10), 600, "day", timedelta(days=1)),
    Collection("90-day", timedelta(days=90), 900, "day", timedelta(days=1)),
]


@dataclass
class Written:
    times: list[datetime]
    authors: Counter
    types: Counter
    domains: Counter


def write_collection(cache: Path, case: Collection) -> Written:
    """Posts evenly over [start, start + span), one object per hour partition."""
    samples = templates()
    step = case.span / case.posts
    written = Written([], Counter(), Counter(), Counter())
    by_hour: dict[datetime, list[bytes]] = {}
    for i in range(case.posts):
        at = case.start + step * i
        author = AUTHORS[(i * i) % len(AUTHORS)]  # uneven: some authors post more
        post_type = TYPES[i % len(TYPES)]
        domain = DOMAINS[i % len(DOMAINS)]
        line = post_line(
            samples[i % len(samples)], 10**18 + i, at, ["topic"], author=author,
            post_type=post_type, urls=[f"https://{domain}/a/{i}?x=1"],
        )  # fmt: skip
        by_hour.setdefault(at.replace(minute=0, second=0, microsecond=0), []).append(line)
        written.times.append(at.replace(microsecond=0))
        written.authors[author] += 1
        written.types[post_type] += 1
        written.domains[domain.removeprefix("www.")] += 1
    for seq, (hour, lines) in enumerate(sorted(by_hour.items())):
        first = max(hour, case.start)
        key = object_key(PREFIX, data_file_name("c1", first, seq) + ".gz")
        path = cache / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(b"".join(lines), compresslevel=1))
    return written


@dataclass
class Rendered:
    case: Collection
    written: Written
    page: str
    html_path: Path
    pngs: dict[str, Image.Image]


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def rendered(request, tmp_path_factory) -> Rendered:
    case: Collection = request.param
    tmp = tmp_path_factory.mktemp(case.name)
    written = write_collection(tmp / "cache", case)
    config = tmp / "collector.toml"
    config.write_text(f'[s3]\nbucket = "{BUCKET}"\nprefix = "{PREFIX}"\n')
    out = tmp / "report.html"
    code = report.main(
        [
            "--config", str(config), "--offline", "--cache-dir", str(tmp / "cache"),
            "--from", case.start.isoformat(), "--to", (case.start + case.span).isoformat(),
            "--out", str(out), "--png", str(tmp / "png"), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    pngs = {}
    for path in sorted((tmp / "png").iterdir()):
        image = Image.open(path).convert("RGB")
        pngs[path.stem] = image
    return Rendered(case, written, out.read_text(), out, pngs)


def data_pixels(image: Image.Image) -> list[tuple[int, int]]:
    """(x, y) of every pixel in the data colour."""
    width = image.width
    return [
        (i % width, i // width)
        for i, rgb in enumerate(image.get_flattened_data())
        if rgb == DATA_RGB
    ]


def table_rows(page: str, section_id: str) -> list[list[str]]:
    """Cells of the first table after the element with id `section_id`."""
    tail = page[page.index(f"id='{section_id}'") :]
    body = tail[tail.index("<tbody>") : tail.index("</tbody>")]
    return [
        [html.unescape(cell) for cell in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def test_every_chart_holds_drawn_data(rendered: Rendered) -> None:
    expected = {"posts_over_time", "post_types", "authors", "rules", "domains", "languages"}
    assert expected <= set(rendered.pngs)
    for name, image in rendered.pngs.items():
        pixels = data_pixels(image)
        assert len(pixels) > 300, f"{name}: {len(pixels)} pixels in the data colour"
    # The time axis covers the period: evenly spread posts fill most of the plot's width,
    # a single bucket included (not a sliver on an axis of years).
    columns = {x for x, _ in data_pixels(rendered.pngs["posts_over_time"])}
    width = rendered.pngs["posts_over_time"].width
    assert max(columns) - min(columns) > 0.75 * width, rendered.case.name


def test_bucket_follows_the_span_and_counts_equal_the_posts(rendered: Rendered) -> None:
    case = rendered.case
    assert f"Posts per {case.bucket}</h2>" in rendered.page
    expected = Counter(report.floor_time(t, case.step) for t in rendered.written.times)
    rows = table_rows(rendered.page, "bucket_counts")
    got = {datetime.strptime(t, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC): int(n) for t, n in rows}
    assert got == dict(expected)
    assert sum(got.values()) == case.posts
    assert 1 <= len(rows) <= 181
    assert sum(len(r) == 2 for r in rows) == len(rows)
    if case.name == "1-minute":
        assert len(rows) == 1


def test_authors_post_types_and_domains_equal_what_was_written(rendered: Rendered) -> None:
    written = rendered.written
    authors = table_rows(rendered.page, "author_counts")
    assert {(u, i): int(n) for u, i, n in authors} == {
        (f"@{name}", author_id): n for (author_id, name), n in written.authors.items()
    }
    assert [int(n) for _, _, n in authors] == sorted(written.authors.values(), reverse=True)
    types = {t: int(n) for t, n in table_rows(rendered.page, "post_type_counts")}
    assert types == {t: written.types.get(t, 0) for t in ("original", "reply", "quote", "repost")}
    domains = {d: int(n) for d, n in table_rows(rendered.page, "domain_counts")}
    assert domains == dict(written.domains)


CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  document.body.setAttribute('data-images', JSON.stringify(images.map(
    i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))));
});
</script>"""


def test_a_browser_shows_every_image(rendered: Rendered, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make debian-packages` installs it")
    page = rendered.html_path.with_name("checked.html")
    page.write_text(rendered.page.replace("</body>", CHECK_IMAGES + "</body>"))
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
        page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'data-images="([^"]*)"', result.stdout)
    assert match, result.stdout[-2000:]
    images = json.loads(html.unescape(match[1]))
    assert len(images) == len(rendered.pngs) == rendered.page.count("<img ")
    for image in images:
        assert image["complete"] and image["width"] >= 400 and image["height"] >= 150, image
    expected = {(w, h) for w, h in ((i.width, i.height) for i in rendered.pngs.values())}
    assert {(i["width"], i["height"]) for i in images} == expected


def test_png_files_equal_the_embedded_images(rendered: Rendered) -> None:
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", rendered.page)
    assert len(embedded) == len(rendered.pngs)
    import base64

    sizes = sorted(Image.open(io.BytesIO(base64.b64decode(d))).size for d in embedded)
    assert sizes == sorted(i.size for i in rendered.pngs.values())
