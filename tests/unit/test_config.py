"""The TOML config: contract keys parse into typed fields; mistakes are one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import ConfigError, load_config, read_bearer_token

FULL = """
collector_id = "collector-1"
[x]
api_base_url = "https://api.x.com"
bearer_token_file = "/etc/twittersnake/x_bearer_token"
stream = "filter"
tweet_fields = ["created_at", "author_id", "lang", "public_metrics", "entities"]
expansions = ["author_id"]
user_fields = ["username", "public_metrics"]
[[x.rules]]
value = "python lang:en"
tag = "python"
[spool]
dir = "/var/lib/twittersnake/spool"
[rotate]
max_records = 20000
max_bytes = 67108864
max_seconds = 300
[s3]
bucket = "my-bucket"
prefix = "tweets"
region = "us-east-1"
endpoint_url = ""
compression = "gzip"
compression_level = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_issue_example_parses_into_typed_fields(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.collector_id == "collector-1"
    assert cfg.x.api_base_url == "https://api.x.com"
    assert cfg.x.bearer_token_file == Path("/etc/twittersnake/x_bearer_token")
    assert cfg.x.rules[0].value == "python lang:en" and cfg.x.rules[0].tag == "python"
    assert cfg.spool.dir == Path("/var/lib/twittersnake/spool")
    assert (cfg.rotate.max_records, cfg.rotate.max_bytes, cfg.rotate.max_seconds) == (
        20000,
        67108864,
        300,
    )
    assert cfg.s3.bucket == "my-bucket" and cfg.s3.compression == "gzip"


def test_only_the_bucket_and_a_rule_are_required_and_collector_id_defaults_to_the_host_name(
    tmp_path: Path,
) -> None:
    import socket

    cfg = load_config(write(tmp_path, '[[x.rules]]\nvalue = "python"\n[s3]\nbucket = "bkt"\n'))
    assert cfg.collector_id == socket.gethostname()
    assert cfg.x.stream == "filter" and cfg.rotate.max_records == 20000
    assert cfg.s3.prefix == "raw" and cfg.x.rule_max_length is None
    no_bucket = "[[x.rules]]\nvalue = 'python'\n[s3]\nprefix = 'p'\n"
    assert "'s3.bucket' is required" in error_of(tmp_path, no_bucket)
    sample = load_config(write(tmp_path, '[x]\nstream = "sample"\n[s3]\nbucket = "bkt"\n'))
    assert sample.x.rules == []


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('stream = "filter"', 'strem = "filter"', "unknown key 'x.strem'"),
        ('prefix = "tweets"', 'prefix = "tweets"\ncolour = 1', "unknown key 's3.colour'"),
        ('tag = "python"', 'tag = "python"\nweight = 2', "unknown key 'x.rules[0].weight'"),
        ("max_records = 20000", 'max_records = "20000"', "'rotate.max_records' must be"),
        ("max_seconds = 300", "max_seconds = true", "'rotate.max_seconds' must be"),
        ('expansions = ["author_id"]', 'expansions = "author_id"', "'x.expansions' must be"),
        ('stream = "filter"', 'stream = "firehose"', "'x.stream' must be one of"),
        ('compression = "gzip"', 'compression = "brotli"', "'s3.compression' must be one of"),
        ('api_base_url = "https://api.x.com"', 'api_base_url = "api.x.com"', "x.api_base_url"),
        (
            'endpoint_url = ""',
            'endpoint_url = "127.0.0.1:9000"',
            "'s3.endpoint_url' must be empty (AWS) or an http:// or https:// URL",
        ),
        ("max_bytes = 67108864", "max_bytes = 0", "'rotate.max_bytes' must be positive"),
        ('collector_id = "collector-1"', 'collector_id = "a/b"', "'collector_id'"),
    ],
)
def test_a_mistake_is_one_line_naming_the_key(
    tmp_path: Path, old: str, new: str, named: str
) -> None:
    message = error_of(tmp_path, FULL.replace(old, new, 1))
    assert named in message
    assert str(tmp_path / "collector.toml") in message


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    assert "invalid TOML" in error_of(tmp_path, "[x\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_token_comes_from_the_env_first_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    cfg = load_config(
        write(tmp_path, FULL.replace("/etc/twittersnake/x_bearer_token", str(token_file)))
    )
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="not found"):
        read_bearer_token(cfg)
    token_file.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        read_bearer_token(cfg)
    token_file.write_text("from-file\n")
    assert read_bearer_token(cfg) == "from-file"
    monkeypatch.setenv("X_BEARER_TOKEN", "from-env")
    assert read_bearer_token(cfg) == "from-env"


def test_cloudwatch_is_off_by_default_and_its_keys_are_checked(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, FULL)).cloudwatch.enabled is False
    on = FULL + '[cloudwatch]\nenabled = true\nregion = "eu-west-1"\nendpoint_url = ""\n'
    cfg = load_config(write(tmp_path, on))
    assert cfg.cloudwatch.enabled and cfg.cloudwatch.region == "eu-west-1"
    assert cfg.cloudwatch.interval_seconds == 60
    assert "'cloudwatch.enabled' must be a boolean" in error_of(
        tmp_path, FULL + '[cloudwatch]\nenabled = "yes"\n'
    )
    assert "unknown key 'cloudwatch.namespace'" in error_of(
        tmp_path, FULL + '[cloudwatch]\nnamespace = "Other"\n'
    )
    assert "'cloudwatch.interval_seconds' must be positive" in error_of(
        tmp_path, FULL + "[cloudwatch]\ninterval_seconds = 0\n"
    )


# One test per input rule: the message names the key and says what is expected. ---------------

BUCKET_RULES = [
    ("s3://my-bucket", "without a scheme"),
    ("My-Bucket", "lowercase letters"),
    ("ab", "3-63 characters"),
    ("a" * 64, "3-63 characters"),
    ("-bucket", "begin and end with a letter or digit"),
    ("bucket-", "begin and end with a letter or digit"),
    ("my_bucket", "lowercase letters, digits, '.' and '-'"),
    ("my..bucket", "two adjacent periods"),
    ("192.168.5.4", "IP address"),
    ("xn--bucket", "reserved prefix 'xn--'"),
    ("sthree-bucket", "reserved prefix 'sthree-'"),
    ("amzn-s3-demo-bucket", "reserved prefix 'amzn-s3-demo-'"),
    ("bucket-s3alias", "reserved suffix '-s3alias'"),
    ("bucket--ol-s3", "reserved suffix '--ol-s3'"),
    ("bucket.mrap", "reserved suffix '.mrap'"),
    ("bucket--x-s3", "reserved suffix '--x-s3'"),
    ("bucket--table-s3", "reserved suffix '--table-s3'"),
]


@pytest.mark.parametrize(("bucket", "expected"), BUCKET_RULES)
def test_a_bucket_name_aws_refuses_is_named_with_the_rule(
    tmp_path: Path, bucket: str, expected: str
) -> None:
    message = error_of(tmp_path, FULL.replace('"my-bucket"', f'"{bucket}"'))
    assert "'s3.bucket'" in message and expected in message
    assert "bucketnamingrules.html" in message


@pytest.mark.parametrize("bucket", ["abc", "my.bucket.name", "a" * 63, "1-bucket", "my-bucket-1"])
def test_a_valid_bucket_name_is_accepted(tmp_path: Path, bucket: str) -> None:
    assert (
        load_config(write(tmp_path, FULL.replace('"my-bucket"', f'"{bucket}"'))).s3.bucket == bucket
    )


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [("tweets/", "tweets"), ("/tweets/", "tweets"), ("a/b/", "a/b"), ("", ""), ("/", "")],
)
def test_a_prefix_is_normalized_once_at_load(tmp_path: Path, prefix: str, normalized: str) -> None:
    cfg = load_config(write(tmp_path, FULL.replace('prefix = "tweets"', f'prefix = "{prefix}"')))
    assert cfg.s3.prefix == normalized


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("tweets//raw", "empty segment"),
        ("tweets/*", "AWS's safe key characters"),
        ("tw eets", "AWS's safe key characters"),
        ("tweets/../x", "'..' segment"),
        ("${aws:username}", "AWS's safe key characters"),
    ],
)
def test_a_prefix_s3_keys_cannot_use_is_refused(tmp_path: Path, prefix: str, expected: str) -> None:
    message = error_of(tmp_path, FULL.replace('prefix = "tweets"', f'prefix = "{prefix}"'))
    assert "'s3.prefix'" in message and expected in message


def test_a_filter_stream_without_rules_is_refused(tmp_path: Path) -> None:
    text = FULL.replace('[[x.rules]]\nvalue = "python lang:en"\ntag = "python"\n', "")
    message = error_of(tmp_path, text)
    assert "'x.rules' is empty" in message and "409" in message


def test_two_rules_with_the_same_value_name_both_entries(tmp_path: Path) -> None:
    text = FULL.replace(
        'tag = "python"\n',
        'tag = "python"\n[[x.rules]]\nvalue = "rust"\n'
        '[[x.rules]]\nvalue = "python lang:en"\ntag = "py2"\n',
    )
    message = error_of(tmp_path, text)
    assert "'x.rules[0]' and 'x.rules[2]'" in message and "'python lang:en'" in message
    assert "duplicate rule value" in message


def test_a_rule_over_rule_max_length_is_refused_when_set(tmp_path: Path) -> None:
    long_rule = FULL.replace('value = "python lang:en"', f'value = "{"a" * 513}"')
    assert load_config(write(tmp_path, long_rule)).x.rules[0].value == "a" * 513  # X decides
    limited = long_rule.replace('stream = "filter"', 'stream = "filter"\nrule_max_length = 512')
    message = error_of(tmp_path, limited)
    assert "'x.rules[0].value' is 513 characters" in message
    assert "x.rule_max_length = 512" in message
    zero = FULL.replace('stream = "filter"', 'stream = "filter"\nrule_max_length = 0')
    assert "'x.rule_max_length' must be positive" in error_of(tmp_path, zero)


def test_rotate_max_seconds_over_an_hour_is_refused(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, FULL.replace("max_seconds = 300", "max_seconds = 3600")))
    message = error_of(tmp_path, FULL.replace("max_seconds = 300", "max_seconds = 3601"))
    assert "'rotate.max_seconds' must be at most 3600" in message
    assert "hour partitions" in message


def test_the_documented_example_loads_and_shows_the_defaults(tmp_path: Path) -> None:
    """A new user copies the config of docs/collector.md: it must load, and what it shows as
    defaults must be the defaults (a key left out behaves as shown)."""
    readme = (Path(__file__).resolve().parents[2] / "docs" / "collector.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    shown = load_config(write(tmp_path, example))
    minimal = 'collector_id = "my-collector"\n[s3]\nbucket = "my-bucket"\n'
    minimal += '[[x.rules]]\nvalue = "python lang:en"\ntag = "python"\n'
    defaults = load_config(write(tmp_path, minimal))
    assert shown == defaults


MINIMAL = '[[x.rules]]\nvalue = "python"\n[s3]\nbucket = "bkt"\n'


def test_the_full_capture_profile_is_the_default_and_compact_is_the_old_set(tmp_path) -> None:
    from collector.source.fields import COMPACT, FULL

    assert load_config(write(tmp_path, MINIMAL)).x.fields == FULL
    compact = load_config(write(tmp_path, '[x]\nfields = "compact"\n' + MINIMAL))
    assert compact.x.fields == COMPACT
    query = FULL.query()
    assert (
        "note_tweet" in query["tweet.fields"]
        and "referenced_tweets.id.author_id" in query["expansions"]
    )
    assert set(query) == {"tweet.fields", "expansions", "user.fields", "media.fields",
                          "poll.fields", "place.fields"}  # fmt: skip
    assert "non_public_metrics" not in query["tweet.fields"]  # the author's own token only


def test_per_kind_lists_ask_for_exactly_those_names(tmp_path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.x.fields.query() == {
        "tweet.fields": "created_at,author_id,lang,public_metrics,entities",
        "expansions": "author_id",
        "user.fields": "username,public_metrics",
    }
    media = '[x]\nmedia_fields = ["alt_text", "type"]\n' + MINIMAL
    assert load_config(write(tmp_path, media)).x.fields.query() == {"media.fields": "alt_text,type"}


@pytest.mark.parametrize(
    ("x_table", "named"),
    [
        ('fields = "everything"', "'x.fields' must be one of 'full', 'compact', got 'everything'"),
        ('fields = "full"\ntweet_fields = ["lang"]', "'x.fields' and 'x.tweet_fields' are both"),
        ('tweet_fields = ["lang", "langs"]', "'x.tweet_fields' holds 'langs': X's stream"),
        ('poll_fields = ["options", "votes"]', "'x.poll_fields' holds 'votes'"),
        ("fields = 3", "'x.fields' must be one of 'full', 'compact'"),
    ],
)
def test_a_wrong_capture_profile_is_one_line_naming_the_key(tmp_path, x_table, named) -> None:
    assert named in error_of(tmp_path, f"[x]\n{x_table}\n" + MINIMAL)


def test_a_misspelt_profile_names_the_nearest_and_the_per_kind_lists(tmp_path) -> None:
    assert error_of(tmp_path, '[x]\nfields = "ful"\n' + MINIMAL) == (
        f"{tmp_path / 'collector.toml'}: 'x.fields' must be one of 'full', 'compact', got 'ful' "
        "(did you mean 'full'?); or leave it out and give per-kind lists (x.tweet_fields, "
        "x.expansions, x.user_fields, x.media_fields, x.poll_fields, x.place_fields)"
    )


@pytest.mark.parametrize(
    ("x_table", "expected"),
    [
        (
            'tweet_fields = ["lang", "non_public_metrics"]',
            "'x.tweet_fields' holds 'non_public_metrics': metrics X gives only to a user-context "
            "token of the post's author (https://docs.x.com/x-api/fundamentals/metrics); the "
            "stream uses an app-only bearer token, so leave it out",
        ),
        ('tweet_fields = ["organic_metrics"]', "'x.tweet_fields' holds 'organic_metrics': metrics"),
        ('tweet_fields = ["promoted_metrics"]', "'x.tweet_fields' holds 'promoted_metrics': m"),
        ('media_fields = ["non_public_metrics"]', "'x.media_fields' holds 'non_public_metrics': "),
        (
            'user_fields = ["username", "connection_status"]',
            "'x.user_fields' holds 'connection_status': the relation to an authenticated user, "
            "which X gives only to a user-context token (https://docs.x.com/xdks/typescript/"
            "reference/interfaces/Schemas.User); the stream uses an app-only bearer token, so "
            "leave it out",
        ),
        ('user_fields = ["receives_your_dm"]', "'x.user_fields' holds 'receives_your_dm': the r"),
    ],
)
def test_fields_only_a_user_context_token_gets_are_refused(tmp_path, x_table, expected) -> None:
    message = error_of(tmp_path, f"[x]\n{x_table}\n" + MINIMAL)
    assert message.startswith(f"{tmp_path / 'collector.toml'}: {expected}")


def test_a_response_spelling_names_the_request_name(tmp_path) -> None:
    message = error_of(tmp_path, '[x]\ntweet_fields = ["note_post"]\n' + MINIMAL)
    assert message.endswith(
        "'x.tweet_fields' holds 'note_post': that is the response spelling of 'note_tweet' "
        "(X's OpenAPI 2.167 renames it in answers); the request name is 'note_tweet', and "
        "either spelling is read"
    )
    message = error_of(tmp_path, '[x]\nexpansions = ["referenced_posts.id"]\n' + MINIMAL)
    assert "the response spelling of 'referenced_tweets.id'" in message


def test_a_near_miss_gets_did_you_mean(tmp_path) -> None:
    message = error_of(tmp_path, '[x]\nmedia_fields = ["alt-text"]\n' + MINIMAL)
    assert "'x.media_fields' holds 'alt-text': X's stream does not accept it in media.fields " in (
        message
    )
    assert "(did you mean 'alt_text'? one of: alt_text, duration_ms," in message
    assert "non_public_metrics" not in message


def test_the_budget_is_optional_and_defaults_to_x_list_price(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.budget.posts_per_day is None and cfg.budget.usd_per_month is None
    assert cfg.budget.usd_per_post == 0.005 and cfg.budget.billing_cycle_day == 1
    assert cfg.budget.on_exhausted == "pause" and not cfg.budget.limited
    text = FULL + "[budget]\nposts_per_day = 1000\nusd_per_month = 150\non_exhausted = 'continue'\n"
    cfg = load_config(write(tmp_path, text))
    assert (cfg.budget.posts_per_day, cfg.budget.usd_per_month) == (1000, 150)
    assert cfg.budget.on_exhausted == "continue" and cfg.budget.limited


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("posts_per_day = 0", "'budget.posts_per_day' must be positive, got 0"),
        ("posts_per_day = 1.5", "'budget.posts_per_day' must be a positive integer"),
        ("usd_per_month = -5", "'budget.usd_per_month' must be positive, got -5"),
        ("usd_per_post = '0.005'", "'budget.usd_per_post' must be a positive number"),
        ("billing_cycle_day = 32", "'budget.billing_cycle_day' must be an integer from 1 to 31"),
        ("on_exhausted = 'stop'", "'budget.on_exhausted' must be one of pause, continue"),
        ("posts_per_month = 5", "unknown key 'budget.posts_per_month'"),
    ],
)
def test_a_budget_mistake_is_one_line_naming_the_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    assert expected in error_of(tmp_path, FULL + f"[budget]\n{table}\n")


def test_run_refuses_a_user_context_field_with_one_line_and_exit_78(tmp_path) -> None:
    from tests.collector_support import run_cli

    config = write(tmp_path, '[x]\nuser_fields = ["connection_status"]\n' + MINIMAL)
    done = run_cli("run", "--config", str(config))
    assert done.returncode == 78
    assert done.stderr.splitlines() == [
        f"collector: error: {config}: 'x.user_fields' holds 'connection_status': the relation "
        "to an authenticated user, which X gives only to a user-context token "
        "(https://docs.x.com/xdks/typescript/reference/interfaces/Schemas.User); the stream "
        "uses an app-only bearer token, so leave it out"
    ]
