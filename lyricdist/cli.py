"""The `lyricdist` command: one subcommand per pipeline stage.

A command is either a typed function ("module:function": its signature and docstring are the options, via
jsonargparse) or a module with `cli_parser()` and `cli_run(parser, args)` (a stage configured by dataclasses, or one
with subcommands). Only the chosen stage is imported, so `lyricdist scrape` does not pay for importing torch; a
command whose optional dependencies are missing names the extra to install. Errors print one line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from .options import call, function_parser

COMMANDS = {
    "scrape": ("lyricdist.genius.cli", "fetch lyrics from Genius with Ray into a HuggingFace dataset"),
    "prepare": ("lyricdist.prepare", "turn corpora into a vocabulary and memory-mapped token arrays"),
    "train": ("lyricdist.train", "train a character-level RNN with Accelerate (DDP, mixed precision)"),
    "sample": ("lyricdist.sample", "generate text from a checkpoint"),
    "collab": ("lyricdist.collab", "write a song with two artists' models"),
    "similarity": ("lyricdist.similarity", "siamese LSTM: train, evaluate, embed and score lyrics"),
    "push": ("lyricdist.push", "upload a checkpoint with a model card to the Hugging Face Hub"),
    "app": ("lyricdist.app", "a local web app (Gradio) for two-artist collaborations"),
    "plot": ("lyricdist.plot", "plot training curves of runs (loss, bits/char, chars/s, lr) into a PNG"),
    "demo": ("lyricdist.demo:run_demo", "the embedded default: prepare the demo corpus, train, print a sample"),
}


# command -> (the extra that installs what it needs, the modules it needs)
EXTRAS = {
    "scrape": ("scrape", ("ray", "lyricsgenius", "rich")),
    "app": ("app", ("gradio",)),
    "plot": ("viz", ("matplotlib",)),
}


def _usage() -> str:
    lines = ["usage: lyricdist COMMAND [options]   (lyricdist COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def missing_extra(command: str) -> str | None:
    """The one-line message for a command whose optional dependencies are not installed, else None."""
    extra, modules = EXTRAS.get(command, ("", ()))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"lyricdist {command} needs {', '.join(missing)}, which this install lacks; "
            f"install it with: pip install 'lyricdist[{extra}]'")


def _command(cmd: str):
    """(parser, run(args) -> exit code) for a command."""
    target = COMMANDS[cmd][0]
    module_name, _, func_name = target.partition(":")
    module = importlib.import_module(module_name)
    if not func_name:
        parser = module.cli_parser()
        return parser, lambda args: module.cli_run(parser, args)
    func = getattr(module, func_name)
    parser = function_parser(func)

    def run(args) -> int:
        result = call(func, args)
        return result if isinstance(result, int) else 0  # a function returning its product succeeded

    return parser, run


def _disk_full(error: Exception) -> bool:
    """A write failed because the disk (or the user's quota) is full; safetensors reports it in its message."""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(error) or "Disk quota exceeded" in str(error)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .version import __version__

        print(__version__)
        return 0
    cmd = argv[0]
    if cmd not in COMMANDS:
        print(f"lyricdist: error: unknown command {cmd!r}; run `lyricdist --help` for the list", file=sys.stderr)
        return 2
    missing = missing_extra(cmd)
    if missing:
        print(f"lyricdist {cmd}: error: {missing}", file=sys.stderr)
        return 1
    from .errors import LyricdistError

    parser, run = _command(cmd)
    parser.prog = f"lyricdist {cmd}"
    try:
        args = parser.parse_args(argv[1:])
    except argparse.ArgumentError as e:
        print(f"lyricdist {cmd}: error: {_one_line(e)} (see `lyricdist {cmd} --help`)", file=sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except LyricdistError as e:
        _leave_process_group()
        print(f"lyricdist {cmd}: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code  # 1 bad input; 3 training diverged; 4 run directory held by another writer
    except KeyboardInterrupt:
        print(f"lyricdist {cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # keep tracebacks for bugs, but only when asked for
        if os.environ.get("LYRICDIST_DEBUG"):
            raise
        if _disk_full(e):
            print(f"lyricdist {cmd}: error: no space left on device ({_one_line(e)}); what was saved before is "
                  f"intact (saves are atomic): free some space, then run the command again (train: with --resume)",
                  file=sys.stderr)
            return 1
        print(
            f"lyricdist {cmd}: error: {type(e).__name__}: {_one_line(e)} (set LYRICDIST_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


def _leave_process_group() -> None:
    """A launched process that stops on an error leaves its process group before exiting: otherwise the group's
    threads can still be running when the interpreter exits ("terminate called without an active exception")."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
