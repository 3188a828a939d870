"""How commands are declared (avaf.shared.cli): every command has -v/-q and --version, shows its defaults and
says bad input on one line; options generated from config dataclass fields override a --config file only
when given."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from avaf.shared.cli import CONTEXT, common_options, config_options, given, option
from avaf.shared.config import resolve
from avaf.shared.version import avaf_version

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _command(target: str) -> click.Command:
    module, name = target.split(":")
    return getattr(import_module(module), name)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_has_version_verbose_quiet_and_shown_defaults(script):
    cmd = _command(SCRIPTS[script])
    res = CliRunner().invoke(cmd, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"avaf, version {avaf_version()}", res.output
    names = {opt for p in cmd.params for opt in p.opts}
    assert {"-v", "--verbose", "-q", "--quiet", "--version", "--help"} <= names | {"--help"}
    help_text = CliRunner().invoke(cmd, ["--help"], terminal_width=200).output
    for p in cmd.params:
        real = isinstance(p.default, int | float) or (isinstance(p.default, str | tuple) and p.default)
        if isinstance(p, click.Option) and real and not p.is_flag and not p.count:
            assert p.show_default, f"{script} {p.opts}: default {p.default!r} not shown"
            assert "[default: " in help_text
    typed = [p.opts for p in cmd.params if isinstance(p, click.Option) and "[default" in (p.help or "")]
    assert typed == [], f"{script}: defaults typed into help strings"


@dataclass(frozen=True)
class _Inner:
    lr: float = option(1e-4, "Learning rate.")
    hidden: int = 7  # not an option: no flag


@dataclass(frozen=True)
class _Cfg:
    name: str = option("x", "A name.", flag="run-name")
    tags: tuple[str, ...] = option((), "Repeatable.")
    size: tuple[int, int] | None = option(None, "Two numbers.")
    fast: bool = option(False, "A switch.")
    local: bool | None = option(None, "Three states: --local, --no-local, or neither (None).")
    kind: str = option("a", "One of two.", choices=("a", "b"))
    inner: _Inner = field(default_factory=_Inner)


@click.command(context_settings=CONTEXT)
@common_options
@click.option("--config", "config_file", default=None)
@config_options(_Cfg)
def _main(config_file, **flags):
    cfg = resolve(_Cfg, config_file, given(_Cfg, flags))
    click.echo(repr(cfg))
    logging.getLogger("avaf.test").info("info line")
    logging.getLogger("avaf.test").warning("warning line")


def test_options_come_from_the_fields_and_only_given_flags_override_the_file(tmp_path):
    runner = CliRunner()
    flags = {o for p in _main.params for o in p.opts}
    assert {"--run-name", "--tags", "--size", "--fast", "--kind", "--lr"} <= flags and "--hidden" not in flags
    out = runner.invoke(
        _main, ["--run-name", "y", "--tags", "a", "--tags", "b", "--size", "3", "4", "--fast"]
    )
    assert out.exit_code == 0, out.output
    assert (
        "_Cfg(name='y', tags=('a', 'b'), size=(3, 4), fast=True, local=None, kind='a', "
        "inner=_Inner(lr=0.0001, hidden=7))" in out.output
    )
    assert "local=True" in runner.invoke(_main, ["--local"]).output
    assert "local=False" in runner.invoke(_main, ["--no-local"]).output
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: from-file\nlocal: false\ninner:\n  lr: 0.5\n")
    out = runner.invoke(_main, ["--config", str(cfg_file), "--lr", "0.25"])
    assert (
        "name='from-file'" in out.output and "local=False" in out.output and "lr=0.25" in out.output
    )  # flag over file, default never over file (nor a three-state flag left unset)
    assert runner.invoke(_main, ["--kind", "c"]).exit_code == 2  # choices are enforced


VERBOSITY = """
import logging, sys
import click
from avaf.shared.cli import common_options

@click.command()
@common_options
def main():
    log = logging.getLogger("avaf.probe")
    log.debug("d-line"); log.info("i-line"); log.warning("w-line"); log.error("e-line")

main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    "args, shown",
    [([], "w e"), (["-v"], "i w e"), (["-vv"], "d i w e"), (["-q"], "e"), (["-v", "-q"], "w e")],
)
def test_verbosity_flags_set_one_logging_level(args, shown):
    """In a fresh process, as a user runs a command: stderr shows exactly the levels asked for."""
    proc = subprocess.run(
        [sys.executable, "-c", VERBOSITY, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    got = [line for line in proc.stderr.splitlines() if "-line" in line]
    expected = {
        "d": "DEBUG avaf.probe: d-line",
        "i": "i-line",
        "w": "WARNING avaf.probe: w-line",
        "e": "ERROR avaf.probe: e-line",
    }
    assert got == [expected[k] for k in shown.split()]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_command_is_named_after_its_script_and_says_errors_on_one_line(script):
    """Each is an avaf.shared.cli.Command (bad input: one line, exit 2) whose messages start with its name."""
    from avaf.shared.cli import Command

    cmd = _command(SCRIPTS[script])
    assert isinstance(cmd, Command) and cmd.name == script
    res = CliRunner().invoke(cmd, ["--zzz"])
    assert res.exit_code == 2
    assert res.stderr == f"{script}: No such option '--zzz'. (try '{script} -h')\n"


def test_a_missing_feature_file_is_named_as_missing_not_as_an_empty_path(tmp_path):
    """`--feats` may come from a flag, a --config file or the run's own config.json (--resume), so avaf-train
    checks it after all three; an empty default path is never handed to click to check for existence."""
    from avaf.train.cli import eval_main
    from avaf.train.cli import main as train_main

    r = CliRunner().invoke(train_main, ["--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "avaf-train: Missing option '--feats'" in r.output
    assert "File ''" not in r.output and not (tmp_path / "run").exists()
    r = CliRunner().invoke(eval_main, ["--checkpoint", str(tmp_path)])
    assert r.exit_code == 2 and "Missing option '--feats'" in r.output
