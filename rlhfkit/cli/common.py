"""What every subcommand shares: error handling, common options, the stderr console."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console

err_console = Console(stderr=True)

ON_ERROR = typer.Option("stop", "--on-error", help="'stop' at the first bad record (exit 2) or 'skip' it.")
REJECTS = typer.Option(None, "--rejects", help="With --on-error skip: write the skipped lines here, unchanged.")
OUT = typer.Option(None, "--out", "-o", help="Output file (written atomically); default stdout.")
SEED = typer.Option(0, "--seed", help="Random seed; same seed and inputs give the same output.")


def _range(check, text: str):
    """An option callback for intervals click's min/max cannot say (open ends); None passes."""
    def callback(value):
        if value is not None and not check(value):
            raise typer.BadParameter(f"{value} is not in {text}")
        return value
    return callback


positive = _range(lambda v: v > 0, "(0, inf)")
open_unit = _range(lambda v: 0 < v < 1, "(0, 1)")
unit_left_open = _range(lambda v: 0 < v <= 1, "(0, 1]")
unit_right_open = _range(lambda v: 0 <= v < 1, "[0, 1)")
below_half = _range(lambda v: 0 <= v < 0.5, "[0, 0.5)")


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error on stderr and exit (2: bad usage or input)."""
    sys.stderr.write(f"rlhfkit: error: {message}\n")
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn the library's input, usage and model errors into a message and exit status 2."""
    from ..io import InputError, UsageError
    from ..models import ModelError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, UsageError, ModelError) as e:
            fail(str(e))
        except OSError as e:  # a file that cannot be read or written: disk full, permissions, a directory
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e}")

    return wrapper


CONFIG = typer.Option(None, "--config", help="YAML file whose keys are flag names; flags given on the command line win.")


def apply_config(ctx: typer.Context, config: str | None, values: dict) -> dict:
    """Fill ``values`` from a YAML file, except for flags the user typed on the command line."""
    if not config:
        return values
    import yaml
    from click.core import ParameterSource

    from ..io import UsageError

    try:
        with open(config) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{config}: cannot read config: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{config}: expected a mapping of flag names to values")
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in values or name == "config":
            raise UsageError(f"{config}: unknown key {key!r}")
        if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            values[name] = value
    return values
