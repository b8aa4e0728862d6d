"""The options of lyricdist's commands, in jsonargparse's own style, and one range system for everyone.

Every command's options come from typed signatures by jsonargparse itself, as `train`'s come from its dataclass
configs: a function command is `add_function_arguments(func)` (`--max_songs 20`, `--argmax true`, lists as
`--temperature '[0.5, 1.0]'` or `--temperature+ 0.5`; required parameters are positional), a stage configured by
dataclasses is `add_class_arguments` (`--train.lr 1e-3`). jsonargparse parses, writes `--help` (types and defaults)
and rejects a value outside its type; lyricdist only prints its message on one line.

Ranges live in types (jsonargparse's PositiveInt, ClosedUnitInterval, ...: a parameter's or a dataclass field's),
so there is one range system: the command line gets it from jsonargparse, Python callers from `check_types`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import operator
import typing
from typing import Callable

from jsonargparse.typing import restricted_number_type

# Ranges jsonargparse does not name: [0, 1) (a dropout or held-out share) and (0, 1] (a decay factor).
FractionBelowOne = restricted_number_type("FractionBelowOne", float, [(">=", 0), ("<", 1)])
DecayFactor = restricted_number_type("DecayFactor", float, [(">", 0), ("<=", 1)])

_WORDS = {operator.gt: ">", operator.ge: ">=", operator.lt: "<", operator.le: "<=", operator.eq: "==",
          operator.ne: "!="}


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or raise a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from .errors import LyricdistError

        raise LyricdistError(f"{what} needs {module}, which this install lacks; "
                             f"install it with: pip install 'lyricdist[{extra}]'") from None


def new_parser(description: str):
    """A jsonargparse parser that raises on bad arguments (lyricdist.cli prints one line) instead of exiting."""
    from jsonargparse import ArgumentParser

    return ArgumentParser(description=description, exit_on_error=False)


def function_parser(func: Callable, words: str | None = None, skip: tuple[str, ...] = (),
                    more: tuple[Callable, ...] = ()):
    """The parser of a command that is the typed function `func` (its docstring's first paragraph describes it).

    jsonargparse adds one option per parameter (`more`: further functions whose parameters the command also takes).
    Required parameters are positional, unless the list parameter `words` takes the command's words (`lyricdist
    prepare a.txt b.txt --out DIR`): then they are required options. `skip`: parameters the caller fills.
    """
    parser = new_parser((inspect.getdoc(func) or "").split("\n\n")[0].replace("\n", " "))
    if words:
        parser.add_argument(words, nargs="*", default=[], help=_param_help(func, words))
    parser.add_function_arguments(func, as_positional=words is None, skip={*skip, *([words] if words else [])},
                                  as_group=False)
    for extra in more:
        parser.add_function_arguments(extra, as_group=False)
    return parser


def _param_help(func: Callable, name: str) -> str | None:
    import docstring_parser

    return next((p.description for p in docstring_parser.parse(func.__doc__ or "").params if p.arg_name == name), None)


def call(func: Callable, args, **given):
    """`func` called with its parameters' values from parsed `args` (other options are the caller's), or `given`."""
    return func(**{name: given[name] if name in given else args[name] for name in inspect.signature(func).parameters})


def listed(value) -> list | None:
    """An option that takes one value or a list of them (`--corpus DIR` or `--corpus '[A, B]'`), as a list."""
    if value is None:
        return None
    return [value] if isinstance(value, (str, int, float)) else list(value)


def plain(value):
    """`value` with range-typed numbers (PositiveInt, ... subclass int/float) as plain ones, for YAML and JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if type(value) in (list, tuple) else [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and type(value) is not int:
        return int(value)
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    return value


def plain_fields(config) -> None:
    """Store a dataclass's range-typed values (jsonargparse gives PositiveInt(5), ...) as plain numbers: a config's
    values end up in optimizer state and checkpoints, which load without unpickling anything but builtins. For
    dataclass configs' __post_init__."""
    for f in dataclasses.fields(config):
        setattr(config, f.name, plain(getattr(config, f.name)))


# ---- one range system: the types --------------------------------------------------------------------------------
def check_types(func: Callable, values: dict) -> None:
    """A Python caller of `func` gets the checks its command line gets from jsonargparse: each value in its
    parameter's range (PositiveInt, ClosedUnitInterval, ...) and Literal choices; one-line LyricdistError."""
    hints = typing.get_type_hints(func)
    for name in inspect.signature(func).parameters:
        if name in hints and name in values:
            _check(name, hints[name], values[name])


def check_fields(config, prefix: str = "") -> None:
    """The same for a dataclass config (recursively): `train.lr must be > 0, got 0`."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{prefix}{f.name}.")
        elif f.name in hints:
            _check(prefix + f.name, hints[f.name], value)


def _check(name: str, hint, value) -> None:
    from .errors import LyricdistError

    problem = _problem(hint, value)
    if problem:
        raise LyricdistError(f"{name} {problem}, got {value!r}")


def _problem(hint, value) -> str | None:
    """Why `value` is not of `hint`'s range or choices (None if it is, or if the hint restricts nothing)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return None if value in args else "must be one of " + ", ".join(map(str, args))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        problems = [_problem(a, value) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else next(p for p in problems if p)
    if origin in (list, tuple, typing.Sequence, __import__("collections.abc").abc.Sequence) and args:
        if not isinstance(value, (list, tuple)):
            return None
        return next((p for p in (_problem(args[0], v) for v in value) if p), None)
    restrictions = getattr(hint, "_restrictions", None)
    if restrictions and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not all(op(value, bound) for op, bound in restrictions):
            return "must be " + " and ".join(f"{_WORDS.get(op, op.__name__)} {bound}" for op, bound in restrictions)
    return None
