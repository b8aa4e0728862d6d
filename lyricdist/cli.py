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
import re
import sys

COMMANDS = {
    "scrape": ("lyricdist.genius.cli", "fetch lyrics from Genius with Ray into a HuggingFace dataset"),
    "prepare": ("lyricdist.prepare", "turn corpora into a vocabulary and memory-mapped token arrays"),
    "train": ("lyricdist.train", "train a character-level RNN with Accelerate (DDP, mixed precision)"),
    "sample": ("lyricdist.sample", "generate text from a checkpoint"),
    "collab": ("lyricdist.collab", "write a song with two artists' models"),
    "similarity": ("lyricdist.similarity", "siamese LSTM: train, evaluate, embed and score lyrics"),
    "demo": ("lyricdist.demo:run_demo", "the embedded default: prepare the demo corpus, train, print a sample"),
}


# command -> (the extra that installs what it needs, the modules it needs)
EXTRAS = {
    "scrape": ("scrape", ("ray", "lyricsgenius", "rich")),
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


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or raise a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from .errors import LyricdistError

        raise LyricdistError(f"{what} needs {module}, which this install lacks; "
                             f"install it with: pip install 'lyricdist[{extra}]'") from None


def function_parser(func):
    """A parser whose options are `func`'s typed parameters (required ones positional), help from its docstring."""
    import inspect

    doc = inspect.getdoc(func) or ""
    parser = new_parser(doc.split("\n\n")[0])
    parser.add_function_arguments(func, as_group=False, as_positional=True)
    _dashed_options(parser)
    return parser


def _dashed_options(parser) -> None:
    """--max-steps, not --max_steps: the command line's convention for a parameter max_steps."""
    for action in parser._actions:
        dashed = [o[:2] + o[2:].replace("_", "-") if o.startswith("--") else o for o in action.option_strings]
        for old, new in zip(action.option_strings, dashed):
            if old != new:
                parser._option_string_actions[new] = parser._option_string_actions.pop(old)
        action.option_strings[:] = dashed


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
        kwargs = {k: v for k, v in vars(parser.instantiate(args)).items() if not k.startswith("__")}
        result = func(**kwargs)
        return result if isinstance(result, int) else 0  # a function returning its product succeeded

    return parser, run


def _one_line(text: str) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    line = re.sub(r'Parser key "(\w+)":', lambda m: "--" + m.group(1).replace("_", "-") + ":", line)
    # jsonargparse's message for a value that fits none of the types of an `X | None`: keep the reason and value
    union = re.match(r"(--[\w-]+): Does not validate against any of the Union subtypes .*?- Not of type (\w+): (.*?)"
                     r" - Expected a <class 'NoneType'>.*Given value: (.*)$", line)
    if union:
        flag, type_, reason, value = union.groups()
        line = f"{flag}: {value} is not a {type_} ({reason})"
    return line


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
