"""The docs name only what exists: every `collector <command>` and every configuration key the
README and docs/*.md show is one the CLI and the config loader accept, and every command of the
CLI is documented in docs/collector.md's command table."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

from collector import cli, config

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)
INLINE = re.compile(r"`([^`]+)`")  # a code span may run over a line break
# `collector status`, `python -m collector rules sync ...`; not `collector.analysis.report`.
COMMAND = re.compile(r"(?<![\w./-])collector ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")


def cli_commands() -> set[str]:
    """Every command of `python -m collector`, subcommands spelled out (`rules sync`)."""
    commands: set[str] = set()

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                    if nested:
                        walk(sub, f"{prefix}{name} ")
                    else:
                        commands.add(prefix + name)

    walk(cli.build_parser(), "")
    return commands


def code_of(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every code block and inline code span; shell comments dropped."""
    text = path.read_text()
    blocks = [(lang, body) for lang, body in FENCE.findall(text)]
    prose = FENCE.sub("", text)
    spans = [("", " ".join(span.split())) for span in INLINE.findall(prose)]
    return [
        (lang, "\n".join(line.split(" #")[0] for line in body.splitlines()))
        for lang, body in blocks + spans
    ]


def commands_named(path: Path) -> set[str]:
    named: set[str] = set()
    groups = {c.split()[0] for c in cli_commands() if " " in c}
    for _, code in code_of(path):
        for first, second in COMMAND.findall(code):
            named.add(f"{first} {second}" if first in groups and second else first)
    return named


def keys_named(path: Path) -> set[str]:
    """`section.key` spans, `[section]` spans and the keys of every TOML block."""
    sections = "|".join(name for name in config._SCHEMA if name)
    dotted = re.compile(rf"^({sections})\.([a-z_]+)$")
    header = re.compile(r"^\[\[?([a-z_.]+)\]\]?$")
    named: set[str] = set()
    for lang, code in code_of(path):
        if lang == "toml":
            for name, value in tomllib.loads(code).items():
                if isinstance(value, dict):
                    named.update(f"{name}.{key}" for key in value)
                else:
                    named.add(name)
        elif match := dotted.match(code):
            named.add(code)
        elif match := header.match(code):
            named.add(f"[{match.group(1)}]")
    return named


def known_keys() -> set[str]:
    known = {f"[{name}]" for name in config._SCHEMA if name} | {"[x.rules]"}
    for section, keys in config._SCHEMA.items():
        known.update(f"{section}.{key}" if section else key for key in keys)
    return known


def test_every_command_the_docs_name_exists_in_the_cli() -> None:
    commands = cli_commands()
    for path in DOCS:
        unknown = commands_named(path) - commands
        assert not unknown, f"{path.relative_to(REPO)} names {sorted(unknown)}; CLI: {commands}"


def test_every_command_of_the_cli_is_in_the_command_table_of_docs_collector() -> None:
    text = (REPO / "docs" / "collector.md").read_text()
    table = text.split("| Command |", 1)[1].split("\n\n", 1)[0]
    first_cells = [row.split("|")[1] for row in table.splitlines()[2:]]
    documented = set()
    for cell in first_cells:
        for span in INLINE.findall(cell):
            words = re.findall(r"^[a-z]+(?: [a-z]+)?", span)[0].split()
            documented.add(" ".join(words) if words[0] == "rules" else words[0])
    assert cli_commands() - documented == set()
    assert {"run", "check", "status", "rules list", "rules sync", "report", "export"} <= documented


def test_every_configuration_key_the_docs_name_is_one_the_loader_accepts() -> None:
    known = known_keys()
    assert "s3.bucket" in keys_named(REPO / "docs" / "collector.md")
    for path in DOCS:
        unknown = keys_named(path) - known
        assert not unknown, f"{path.relative_to(REPO)} names {sorted(unknown)}"


def test_a_misspelled_command_or_key_in_the_docs_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `collector stauts` or `python -m collector rules snyc`; set `s3.buckett`.\n"
        "```toml\n[rotate]\nmax_second = 5\n```\n"
    )
    assert commands_named(page) - cli_commands() == {"stauts", "rules snyc"}
    assert keys_named(page) - known_keys() == {"s3.buckett", "rotate.max_second"}
