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


def test_only_the_bucket_is_required_and_collector_id_defaults_to_the_host_name(
    tmp_path: Path,
) -> None:
    import socket

    cfg = load_config(write(tmp_path, '[s3]\nbucket = "b"\n'))
    assert cfg.collector_id == socket.gethostname()
    assert cfg.x.stream == "filter" and cfg.rotate.max_records == 20000
    assert "s3.bucket" in error_of(tmp_path, "[s3]\nprefix = 'p'\n")


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
