"""The `rlhfkit` command line: one thin module per subcommand, registered here."""

from __future__ import annotations

import signal
import sys

import typer

from .clean import clean
from .ensemble import ensemble
from .generate import generate
from .judge import judge
from .metrics import metrics_app
from .ppo import ppo
from .prompts import prompts
from .strength import strength
from .score import score
from .simulate import simulate_app
from .synth import synth
from .train_rm import train_rm
from .validate import validate

# the click that typer runs on (typer vendors its own copy): its exception classes
CLICK = sys.modules[typer.BadParameter.__module__]

app = typer.Typer(
    name="rlhfkit",
    help="Composable stages for reward modelling and RLHF research. Records are JSONL on "
    "stdin/stdout; models are directories. Every stage ends with a JSON summary on stderr.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

app.command("synth")(synth)
app.command("validate")(validate)
app.command("train-rm")(train_rm)
app.command("score")(score)
app.command("ensemble")(ensemble)
app.command("strength")(strength)
app.command("clean")(clean)
app.command("ppo")(ppo)
app.command("generate")(generate)
app.command("prompts")(prompts)
app.command("judge")(judge)
app.add_typer(metrics_app, name="metrics")
app.add_typer(simulate_app, name="simulate")


def main() -> None:
    """Console entry point.

    A closed stdout (`rlhfkit X | head -1`) ends the process quietly, as it does for any Unix
    filter: SIGPIPE keeps its default action instead of Python's BrokenPipeError traceback.
    SIGTERM (SLURM, timeout, kill) unwinds through every cleanup before exiting.
    """
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(standalone_mode=False)
    except CLICK.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `rlhfkit` or `rlhfkit metrics` alone: the help
            sys.stderr.write(e.format_message() + "\n")
        else:  # one line, as every other rlhfkit error
            command = e.ctx.command_path if e.ctx else "rlhfkit"
            sys.stderr.write(f"rlhfkit: error: {e.format_message()} (see `{command} --help`)\n")
        sys.exit(2)
    except CLICK.ClickException as e:
        sys.stderr.write(f"rlhfkit: error: {e.format_message()}\n")
        sys.exit(e.exit_code)
    except CLICK.Abort:
        sys.stderr.write("rlhfkit: aborted\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _terminate(signum, _frame) -> None:
    """SIGTERM unwinds like an exception, so temp files and directories are removed on the way out."""
    raise SystemExit(128 + signum)
