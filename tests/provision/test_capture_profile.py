"""collector_x_fields reaches the collector: the role renders x.fields (a profile) or the
per-kind lists, and the collector loads them into the request it sends X."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import load_config
from collector.source.fields import COMPACT, FULL, FieldSet
from tests.provision.test_prefix import render_roles


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (None, FULL),
        ("compact", COMPACT),
        (
            {"tweet_fields": ["created_at", "note_tweet"], "media_fields": ["alt_text"]},
            FieldSet(tweet_fields=("created_at", "note_tweet"), media_fields=("alt_text",)),
        ),
    ],
)
def test_the_role_renders_the_capture_profile_the_collector_loads(
    tmp_path: Path, fields: object, expected: FieldSet
) -> None:
    extra = {} if fields is None else {"collector_x_fields": fields}
    rendered = render_roles(tmp_path, "raw", **extra)
    assert load_config(rendered["collector_toml_path"]).x.fields == expected
