"""The `lyricdist` command: one subcommand per pipeline stage.

Each stage module defines `cli_parser()` (a typed jsonargparse parser) and `cli_run(parser, args)`; only the
chosen stage is imported, so `lyricdist scrape` does not pay for importing torch. Errors print one line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

COMMANDS = {
    "scrape": ("lyricdist.scrape", "fetch lyrics from Genius with Ray into a HuggingFace dataset"),
    "prepare": ("lyricdist.prepare", "turn corpora into a vocabulary and memory-mapped token arrays"),
    "train": ("lyricdist.train", "train a character-level RNN with Accelerate (DDP, mixed precision)"),
    "sample": ("lyricdist.sample", "generate text from a checkpoint"),
    "collab": ("lyricdist.collab", "write a song with two artists' models"),
    "similarity": ("lyricdist.similarity", "siamese LSTM: train, evaluate, embed and score lyrics"),
    "push": ("lyricdist.hub", "upload a checkpoint with a model card to the Hugging Face Hub"),
    "app": ("lyricdist.app", "a local web app (Gradio) for two-artist collaborations"),
    "plot": ("lyricdist.plot", "plot training curves of runs (loss, bits/char, chars/s, lr) into a PNG"),
    "demo": ("lyricdist.demo", "the embedded default: prepare the demo corpus, train, print a sample"),
}


def _usage() -> str:
    lines = ["usage: lyricdist COMMAND [options]   (lyricdist COMMAND --help for its options)", "", "commands:"]
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            lines.append(f"  {name:<11} {help_}")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(__version__)
        return 0
    cmd = argv[0]
    if cmd not in COMMANDS or importlib.util.find_spec(COMMANDS[cmd][0]) is None:
        print(f"lyricdist: error: unknown command {cmd!r}; run `lyricdist --help` for the list", file=sys.stderr)
        return 2
    from .errors import LyricdistError

    module = importlib.import_module(COMMANDS[cmd][0])
    parser = module.cli_parser()
    parser.prog = f"lyricdist {cmd}"
    try:
        args = parser.parse_args(argv[1:])
    except argparse.ArgumentError as e:
        print(f"lyricdist {cmd}: error: {_one_line(e)} (see `lyricdist {cmd} --help`)", file=sys.stderr)
        return 2
    try:
        return int(module.cli_run(parser, args) or 0)
    except LyricdistError as e:
        print(f"lyricdist {cmd}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lyricdist {cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # keep tracebacks for bugs, but only when asked for
        if os.environ.get("LYRICDIST_DEBUG"):
            raise
        print(
            f"lyricdist {cmd}: error: {type(e).__name__}: {_one_line(e)} (set LYRICDIST_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


def new_parser(description: str):
    """A jsonargparse parser that raises on bad arguments (the caller prints one line) instead of exiting."""
    from jsonargparse import ArgumentParser

    return ArgumentParser(description=description, exit_on_error=False)
