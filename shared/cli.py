"""How avaf commands are declared: options generated from a config dataclass, one logging setup, one-line errors.

The two real configs, `ExtractConfig` and `TrainConfig` (STYLE.md "One typed config per stage"), make each
setting a dataclass field with `option` (its help, flag name and choices as field metadata; the default in the
dataclass only); `config_options(cls)` turns the fields into flags and `from_flags(cls, flags, file)` layers
defaults, then the --config file, then only the flags the user gave (`given`). One-off commands (avaf-inspect,
avaf-export, avaf-synth, ...) declare plain click options. Every command is a `Command` with `common_options`
(-v/-q, --version): bad input ends as one line on stderr, "COMMAND: message" naming the file and the problem,
and exit status 2, never a traceback (-vv logs it).

    @click.command("avaf-train", cls=Command, context_settings=CONTEXT)
    @common_options
    @config_options(TrainConfig)
    def main(**flags):
        cfg = from_flags(TrainConfig, flags)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from avaf.shared.config import resolve
from avaf.shared.errors import AvafError
from avaf.shared.version import avaf_version

T = TypeVar("T")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)
#: what a command reports as bad input (one line, exit 2) rather than as a bug
USER_ERRORS: tuple[type[BaseException], ...] = (AvafError, ValueError, OSError)
VERBOSITY = "avaf.verbosity"  # click context meta key: -v count minus -q count

log = logging.getLogger(__name__)


def one_line(e: BaseException) -> str:
    """An error's message on one line; an OSError as "FILE: reason" (its own str() may omit the file)."""
    if isinstance(e, click.ClickException):
        text = e.format_message()  # with the option it is about: "Invalid value for '--feats': ..."
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else e.filename
        text = f"{where}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def end_progress_bars() -> None:
    """Close every progress bar still open, so that the line printed next starts a line of its own: a bar
    an error left open (the encoders failing as the Ray job starts) keeps the cursor at its end, and is
    drawn once more when it is collected. tqdm is not imported for it: an early error has drawn no bar."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(tqdm.tqdm._instances):  # every open, enabled bar (tqdm.auto's and others share it)
            bar.close()  # leave=True: drawn one last time, then a newline; leave=False: its line cleared


class OneLineError(click.ClickException):
    """What `Command` raises instead: click prints it as "COMMAND: message" on a line of its own (after the
    progress bars it ends) and exits 2."""

    exit_code = 2

    def __init__(self, command: str, message: str):
        super().__init__(message)
        self.command = command

    def show(self, file=None) -> None:
        end_progress_bars()
        click.echo(f"{self.command}: {self.message}", err=True, file=file)


class Command(click.Command):
    """A click command whose every bad input is one line on stderr and exit status 2, never a traceback:
    usage errors (a missing file, a bad choice) and the `user_errors` the command raises while running."""

    user_errors: tuple[type[BaseException], ...] = USER_ERRORS

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            name = e.ctx.command_path if e.ctx else info_name or self.name
            raise OneLineError(name, f"{one_line(e)} (try '{name} -h')") from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise OneLineError(ctx.command_path, one_line(e)) from None
        except self.user_errors as e:
            log.debug("%s failed", ctx.command_path, exc_info=True)  # -vv: the traceback, for a bug report
            raise OneLineError(ctx.command_path, one_line(e)) from None


def verbosity() -> int:
    """The running command's -v count minus its -q count; 0 outside a command (a library caller)."""
    ctx = click.get_current_context(silent=True)
    return 0 if ctx is None else ctx.meta.get(VERBOSITY, 0)


def show_progress() -> bool:
    """Progress bars unless the command was asked to be quiet (-q)."""
    return verbosity() >= 0


def option(
    default: Any = None,
    help: str = "",
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    path: dict | None = None,
    required: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option (`--flag`, by default the field name)."""
    meta = {"help": help, "flag": flag, "choices": choices, "path": path, "required": required}
    return dataclasses.field(default=default, metadata=meta)


def _fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted path, field, type hint) of every field made with `option`, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _fields(hint, f"{prefix}{f.name}.")
        elif "help" in f.metadata:
            yield f"{prefix}{f.name}", f, hint


def _flag(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or f.name.replace("_", "-")


def _dest(f: dataclasses.Field) -> str:
    """The keyword the command function receives the flag's value under."""
    return _flag(f).replace("-", "_")


def _default(f: dataclasses.Field) -> Any:
    return f.default


def _click_type(hint: Any, f: dataclasses.Field) -> dict:
    """click.option keywords for a field's type: Optional unwrapped, tuple[X, ...] repeatable, tuple[X, Y] nargs."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    kwargs: dict = {}
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            kwargs["multiple"] = True
        else:
            kwargs["nargs"] = len(args)
        hint = args[0]
    if f.metadata["choices"]:
        kwargs["type"] = click.Choice(list(f.metadata["choices"]))
    elif f.metadata["path"] is not None:
        kwargs["type"] = click.Path(**f.metadata["path"])
    elif hint in (int, float, str):
        kwargs["type"] = hint
    return kwargs


def config_options(cls: type) -> Callable:
    """A decorator adding one click option per `option` field of the config dataclass `cls`."""

    def decorate(fn: Callable) -> Callable:
        for _path, f, hint in reversed(list(_fields(cls))):
            name, dest, default = _flag(f), _dest(f), _default(f)
            common = dict(help=f.metadata["help"], required=f.metadata["required"])
            if not (f.metadata["path"] is not None and default in ("", None)):
                common["default"] = default  # an empty path is no default: click would check it exists
            if hint is bool:
                decl = f"--{name}/--no-{name}" if default else f"--{name}"
                fn = click.option(decl, dest, is_flag=True, show_default=bool(default), **common)(fn)
            elif hint == bool | None:  # three states: --x, --no-x, or neither (None: the code decides)
                fn = click.option(f"--{name}/--no-{name}", dest, **common)(fn)
            else:
                show = default is not None and default not in ("", ())
                fn = click.option(f"--{name}", dest, show_default=show, **_click_type(hint, f), **common)(fn)
        return fn

    return decorate


def config_file_option(help: str = "YAML/TOML config file; flags override it.") -> Callable:
    """`--config FILE`, passed to the command as `config_file`: declared here once for every command."""
    return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help=help)


def old_spelling(old: str, new: str, dest: str, *, required: bool = False, **kwargs: Any) -> Callable:
    """Keep a renamed flag's old spelling working: a hidden option `old` whose value, when given, reaches the
    command as `dest` (the new flag's name) with a note on stderr that it is now `new`. `required`: `new` is
    required unless `old` was given (declare `new` itself not required). `kwargs` go to click.option."""
    hidden = f"_{dest}_as_{old.lstrip('-').replace('-', '_')}"

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **values):
            value = values.pop(hidden)
            if value is not None:
                click.echo(f"{click.get_current_context().command_path}: {old} is now {new}", err=True)
                values[dest] = value
            elif required and values[dest] is None:
                raise click.UsageError(f"Missing option '{new}'.")
            return fn(*args, **values)

        return click.option(old, hidden, hidden=True, **kwargs)(wrapper)

    return decorate


def given(cls: type, flags: dict) -> dict:
    """The flags the user gave on the command line (or in the environment), keyed by their dotted config
    path ("optim.lr"); flags left at their default are dropped, so they never override a --config file."""
    ctx = click.get_current_context()
    out = {}
    for path, f, _hint in _fields(cls):
        dest = _dest(f)
        if ctx.get_parameter_source(dest) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            value = flags[dest]
            out[path] = tuple(value) if isinstance(value, list) else value
    return out


def from_flags(cls: type[T], flags: dict, file: str | None = None) -> T:
    """The config a command was asked for: defaults, then `file` (if any), then the flags given."""
    return resolve(cls, file, given(cls, flags))


class _Formatter(logging.Formatter):
    """Plain messages for INFO (progress lines), the level and logger name for everything else; a logged
    exception's traceback only at -vv (one line otherwise)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno != logging.INFO:
            text = f"{record.levelname} {record.name}: {text}"
        if record.exc_info and logging.getLogger().isEnabledFor(logging.DEBUG):  # -vv: the traceback too
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbosity: int = 0, base: int = logging.WARNING) -> None:
    """The one logging setup of every command: `base` level, each -v one level more, each -q one less;
    messages to stderr, INFO plain, the rest with level and logger name."""
    root = logging.getLogger()
    if root.handlers:  # a host that set up logging (an application, pytest) owns it: change nothing
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[max(0, min(len(LEVELS) - 1, LEVELS.index(base) + verbosity))])


def common_options(fn: Callable | None = None, *, base: int = logging.WARNING) -> Callable:
    """-v/--verbose, -q/--quiet (both countable) and --version, with the logging set up before the command."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, verbose: int, quiet: int, **kwargs):
            click.get_current_context().meta[VERBOSITY] = verbose - quiet
            setup_logging(verbose - quiet, base)
            return fn(*args, **kwargs)

        wrapper = click.option("-q", "--quiet", count=True, help="Less output (repeatable).")(wrapper)
        wrapper = click.option("-v", "--verbose", count=True, help="More output: -v info, -vv debug.")(
            wrapper
        )
        return click.version_option(avaf_version(), "--version", prog_name="avaf")(wrapper)

    return decorate(fn) if fn is not None else decorate
