"""What every subcommand shares: error handling, common options, the stderr console."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console

err_console = Console(stderr=True)

ON_ERROR = typer.Option("stop", "--on-error", metavar="stop|skip", help="'stop' at the first bad record (exit 2) or 'skip' it.")
REJECTS = typer.Option(None, "--rejects", metavar="FILE", help="With --on-error skip: write the skipped lines here, unchanged.")
OUT = typer.Option(None, "--out", "-o", metavar="FILE", help="Output file (written atomically); default stdout.")
FIELDS = typer.Option(None, "--fields", metavar="NAME=FIELD,...|PRESET",
                      help="Read other datasets' fields: renames (prompt=question,chosen=response_j,rejected=response_k), "
                           "tests (label=preference==1), numbers (label=2-preference, margin=score_chosen-score_rejected; "
                           "a label is clipped to [0, 1]), sign tests with ties at 0.5 (label=preference_strength<0), "
                           "paths (responses=answers.answer), keep=TEST; or a preset: alpacaeval, pku-saferlhf, "
                           "pku-saferlhf-safer, shp, nectar, helpsteer2 (README: Your dataset).")
DTYPE = typer.Option("auto", "--dtype", metavar="auto|fp32|bf16|fp16",
                     help="Compute precision of the models (strength: its fold models' too): auto (bf16 on GPUs "
                          "that support it, fp32 on CPU), fp32, bf16 or fp16 (a 7B model in fp32 needs twice the "
                          "memory of bf16).")
CHAT_TEMPLATE = typer.Option(None, "--chat-template/--no-chat-template",
                             help="Wrap prompts in the policy's chat template (default: when its tokenizer has one); "
                                  "--no-chat-template for prompts already in the policy's format, e.g. HH's "
                                  "'Human: ... Assistant:' transcripts.")
SEED = typer.Option(0, "--seed", metavar="N", help="Random seed; same seed and inputs give the same output.")


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


CONFIG = typer.Option(None, "--config", metavar="YAML", help="YAML file whose keys are flag names; flags given on the command line win.")


def apply_config(ctx: typer.Context, config: str | None, values: dict) -> dict:
    """Fill ``values`` from a YAML file, except for flags the user typed on the command line.

    Each value goes through its option's own conversion and checks (so ``lr: 1e-4``, a string to
    YAML 1.1, becomes a float, and an out-of-range value is an error naming the file and key).
    """
    if not config:
        return values
    import yaml

    from ..io import UsageError

    try:
        with open(config) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{config}: cannot read config: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{config}: expected a mapping of flag names to values")
    params = {p.name: p for p in ctx.command.params}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name not in values or name in ("config", "ctx") or name not in params:
            raise UsageError(f"{config}: unknown key {key!r} (keys are the command's flag names)")
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":  # typer vendors click: compare by name
            continue
        try:
            values[name] = params[name].process_value(ctx, value)
        except Exception as e:  # noqa: BLE001 - click's BadParameter and the coercion errors
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            raise UsageError(f"{config}: key {key!r}: {message}") from None
    return values
