"""The `rlhfkit` command line: one thin module per subcommand, registered here."""

from __future__ import annotations

import os
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
from .report import report
from .strength import strength
from .score import score
from .sft import sft
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

def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"rlhfkit {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print rlhfkit's version and exit."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Let the libraries underneath print their own notices and bars."),
) -> None:
    """Composable stages for reward modelling and RLHF research. Records are JSONL on stdin/stdout;
    models are directories. Every stage ends with a JSON summary on stderr."""
    if verbose:
        os.environ["RLHFKIT_VERBOSE"] = "1"


app.command("synth", short_help="Synthetic preference pairs with a hidden gold reward and known flipped labels.")(synth)
app.command("validate", short_help="Check records against the contract; write them back with a stable id.")(validate)
app.command("train-rm", short_help="Train a reward model (Bradley-Terry, margins, soft labels, rankings, contrastive, MetaRM).")(train_rm)
app.command("sft", short_help="Supervised fine-tuning of a policy on prompt -> response records (TRL's SFTTrainer).")(sft)
app.command("score", short_help="Add rewards to records from a reward model or ensemble.")(score)
app.command("ensemble", short_help="K reward heads on a frozen backbone, or an ensemble of trained reward models.")(ensemble)
app.command("strength", short_help="Per-pair preference strength: mean and std of out-of-sample reward margins.")(strength)
app.command("clean", short_help="Flip, smooth, re-margin or drop noisy pairs using their strength.")(clean)
app.command("ppo", short_help="PPO against a reward with KL, var-KL, PM or conditional-PM regularisers.")(ppo)
app.command("generate", short_help="Sample responses from a policy.")(generate)
app.command("prompts", short_help="Prompt records from raw text or records; Reward Collapse prefix rankings.")(prompts)
app.command("judge", short_help="Pairwise LLM judge (OpenAI-compatible API) or a reward model as judge.")(judge)
app.command("report", short_help="A paper recipe's headline table, beside the paper's numbers, from the run's outputs.")(report)
app.add_typer(metrics_app, name="metrics", short_help="PM divergence, generation statistics, RM accuracy, reward distributions, win rates.")
app.add_typer(simulate_app, name="simulate", short_help="The papers' theory experiments: variance-aware policies, PM bias.")


def main() -> None:
    """Console entry point.

    A closed stdout (`rlhfkit X | head -1`) ends the process quietly, as it does for any Unix
    filter: SIGPIPE keeps its default action instead of Python's BrokenPipeError traceback.
    SIGTERM (SLURM, timeout, kill) unwinds through every cleanup before exiting.
    """
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _terminate)
    thread_defaults()
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
    except typer.Abort:
        sys.stderr.write("rlhfkit: aborted\n")
        sys.exit(130)
    code = code if isinstance(code, int) else 0
    if "LOCAL_RANK" in os.environ:
        leave_launched_process(code)
    sys.exit(code)


def leave_launched_process(code: int) -> None:
    """A launched process whose work is done and written leaves without the interpreter's teardown:
    there a gloo worker thread still alive in a static destructor aborts the process now and then
    ("terminate called without an active exception", SIGABRT), and the launcher then fails the whole
    run after it finished. Outputs are already in place (atomic writes) and rlhfkit registers no
    exit handlers; the streams are flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def thread_defaults() -> None:
    """Set once, before torch loads: the tokenizers' own thread pool off (torch's threads do the work;
    it also keeps forked data workers quiet), and with several processes on one machine each gets its
    share of the cores instead of all of them (N processes x all cores oversubscribe the CPU).
    Anything the user set in the environment stays."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // local))


def _terminate(signum, _frame) -> None:
    """SIGTERM unwinds like an exception, so temp files and directories are removed on the way out."""
    raise SystemExit(128 + signum)
