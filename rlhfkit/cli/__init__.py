"""The `rlhfkit` command line: one thin module per subcommand, registered here."""

from __future__ import annotations

import signal

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
    """
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()
