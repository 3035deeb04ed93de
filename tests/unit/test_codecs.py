"""The codec registry (collector/sink/codecs.py): what the tools users read the objects with see.

gzip is ISA-L's: checked with `gzip -t`, `zcat` and DuckDB, and again with ISA-L missing
(the zlib fallback, in a child Python where `isal` cannot be imported).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from collector.config import ConfigError, load_config
from collector.sink import codecs
from collector.sink.codecs import CODECS, codec_of
from collector.spool.compress import compress_file
from collector.spool.layout import SpoolDirs, object_key
from collector.telemetry.metrics import Metrics
from tests.integration.test_shipping import BUCKET, PREFIX, config
from tests.unit.test_config import FULL, write

REPO = Path(__file__).resolve().parents[2]
POSTS = REPO / "tests" / "fakes" / "data" / "x_v2_filtered_stream.jsonl"
NAME = "test-1-20260102T030405Z-000001.jsonl"


def sealed_posts(tmp_path: Path, copies: int = 20) -> tuple[SpoolDirs, Path, bytes]:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    data = POSTS.read_bytes() * copies
    sealed = dirs.sealed / NAME
    sealed.write_bytes(data)
    return dirs, sealed, data


def test_role_choices_and_defaults_equal_the_registry() -> None:
    specs = yaml.safe_load((REPO / "roles/collector/meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert options["collector_s3_compression"]["choices"] == list(CODECS)
    defaults = yaml.safe_load((REPO / "roles/collector/defaults/main.yml").read_text())
    codec = CODECS[defaults["collector_s3_compression"]]
    assert codec.accepts(defaults["collector_s3_compression_level"])


def test_gzip_is_written_by_isal_here() -> None:
    # requirements.txt pins isal: the fast path is the one every other test exercises
    assert codecs.GZIP_BACKEND == "isal"


def test_gzip_output_is_standard_gzip(tmp_path: Path) -> None:
    dirs, sealed, data = sealed_posts(tmp_path)
    ready = compress_file(sealed, dirs, "gzip", 1)
    assert ready.name == NAME + ".gz"
    assert subprocess.run(["gzip", "-t", str(ready)]).returncode == 0
    assert subprocess.run(["zcat", str(ready)], capture_output=True, check=True).stdout == data
    assert len(ready.read_bytes()) < len(data) / 3


def test_duckdb_reads_the_gzip_objects(tmp_path: Path) -> None:
    dirs, sealed, data = sealed_posts(tmp_path)
    ready = compress_file(sealed, dirs, "gzip", 1)
    ids = duckdb.sql(
        f"SELECT data.id FROM read_json('{ready}', format='newline_delimited')"
    ).fetchall()
    expected = [json.loads(line)["data"]["id"] for line in data.splitlines()]
    assert [row[0] for row in ids] == expected


def test_zlib_fallback_writes_the_same_data_when_isal_is_missing(tmp_path: Path) -> None:
    dirs, sealed, data = sealed_posts(tmp_path)
    child = (
        "import sys; sys.modules['isal'] = None\n"  # `import isal` now raises ImportError
        "from pathlib import Path\n"
        "from collector.sink import codecs\n"
        "from collector.spool.compress import compress_file\n"
        "from collector.spool.layout import SpoolDirs\n"
        "print(codecs.GZIP_BACKEND)\n"
        f"compress_file(Path({str(sealed)!r}), SpoolDirs(Path({str(dirs.root)!r})), 'gzip', 3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "zlib"
    ready = dirs.ready / (NAME + ".gz")
    assert subprocess.run(["gzip", "-t", str(ready)]).returncode == 0
    assert gzip.decompress(ready.read_bytes()) == data


@pytest.mark.parametrize("level", [0, 3])
def test_every_gzip_level_is_read_back_by_zcat(tmp_path: Path, level: int) -> None:
    dirs, sealed, data = sealed_posts(tmp_path, copies=2)
    ready = compress_file(sealed, dirs, "gzip", level)
    assert subprocess.run(["zcat", str(ready)], capture_output=True, check=True).stdout == data


def test_zstd_output_is_read_by_the_zstd_tool(tmp_path: Path) -> None:
    dirs, sealed, data = sealed_posts(tmp_path)
    ready = compress_file(sealed, dirs, "zstd", 3)
    assert ready.name == NAME + ".zst"
    done = subprocess.run(["zstd", "-dc", str(ready)], capture_output=True, check=True)
    assert done.stdout == data


@pytest.mark.parametrize("name", list(CODECS))
def test_each_codec_reads_back_what_it_wrote(tmp_path: Path, name: str) -> None:
    dirs, sealed, data = sealed_posts(tmp_path, copies=2)
    ready = compress_file(sealed, dirs, name, 1)
    assert codec_of(ready.name) is CODECS[name]
    with open(ready, "rb") as raw:
        assert CODECS[name].reader(raw).read() == data


@pytest.mark.parametrize("name", list(CODECS))
def test_objects_carry_the_codecs_content_type(tmp_path: Path, s3, aws_env, name: str) -> None:
    from collector.sink.shipper import Shipper

    s3.create_bucket(Bucket=BUCKET)
    dirs, sealed, _ = sealed_posts(tmp_path, copies=1)
    shipper = Shipper(config(dirs.root, name), dirs, Metrics(), retry_base=0.05, retry_cap=0.5)
    try:
        shipper.start()
        assert shipper.drain(time.monotonic() + 20) == 0
    finally:
        shipper.stop()
    key = object_key(PREFIX, NAME.removesuffix(".jsonl") + CODECS[name].extension)
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentType"] == CODECS[name].content_type


@pytest.mark.parametrize(
    "codec,level,expected",
    [
        ("gzip", 9, "an integer from 0 to 3, got 9"),
        ("zstd", 23, "an integer from -7 to 22, got 23"),
    ],
)
def test_a_level_the_codec_refuses_is_one_line_naming_the_key(
    tmp_path: Path, codec: str, level: int, expected: str
) -> None:
    text = FULL.replace('compression = "gzip"', f'compression = "{codec}"')
    text = text.replace("compression_level = 1", f"compression_level = {level}")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "'s3.compression_level'" in message and expected in message and "\n" not in message
