"""The options of lyricdist's commands, from typed function signatures (jsonargparse), and the same range checks
for Python callers. Library modules import this; lyricdist.cli only dispatches the commands."""

from __future__ import annotations

import importlib
import re
from typing import Callable

RESTRICTIONS = {"v>0": "must be positive", "v>=0": "must be >= 0", "v>=0 and v<=1": "must be in [0, 1]",
                "v>0 and v<1": "must be in (0, 1)"}


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or raise a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        from .errors import LyricdistError

        raise LyricdistError(f"{what} needs {module}, which this install lacks; "
                             f"install it with: pip install 'lyricdist[{extra}]'") from None


def add_signature_options(parser, func: Callable, positional: str | None = None, skip: tuple[str, ...] = (),
                          flags: dict[str, str] | None = None) -> None:
    """One option per parameter of `func`, written once there: `--dashed-name` with its type and default, help from
    its docstring, range checks from its types (PositiveInt, Literal, ...). A parameter without a default is a
    positional argument, or, when the list parameter `positional` takes the command's words, a required option;
    a bool (or bool | None) is a --flag / --no-flag pair. `skip` leaves parameters out (the caller fills them);
    `flags` names an option otherwise than after its parameter (e.g. {"artists": "--artist"})."""
    import inspect
    import typing

    import docstring_parser
    from jsonargparse import ActionYesNo

    hints = typing.get_type_hints(func)
    helps = {p.arg_name: p.description for p in docstring_parser.parse(func.__doc__ or "").params}
    for name, param in inspect.signature(func).parameters.items():
        if name in skip:
            continue
        required = param.default is inspect.Parameter.empty
        flag, hint, help_ = (flags or {}).get(name, "--" + name.replace("_", "-")), hints[name], helps.get(name)
        listed = _listed_scalar(hint)  # --temperature 0.5 1.0, not --temperature [0.5,1.0]
        if name == positional:
            parser.add_argument(name, nargs="*", type=str, default=[], help=help_)
        elif required and positional is None:
            parser.add_argument(name, type=hint, help=help_)
        elif required:
            parser.add_argument(flag, type=hint, required=True, help=help_, dest=name)
        elif hint is bool or hint == bool | None:
            parser.add_argument(flag, action=ActionYesNo(yes_prefix="", no_prefix="no-"), default=param.default,
                                help=help_, dest=name)
        elif listed is not None:
            default = None if param.default is None else list(param.default)
            parser.add_argument(flag, nargs="+", type=listed, default=default, help=help_, dest=name,
                                metavar=flag[2:].upper().replace("-", "_"))
        else:
            parser.add_argument(flag, type=hint, default=param.default, help=help_, dest=name)


def _listed_scalar(hint):
    """T for list[T] / Sequence[T] / list[T] | None with T a scalar type, else None."""
    import collections.abc
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (list, collections.abc.Sequence):
        (item,) = typing.get_args(hint) or (str,)
        if isinstance(item, type) and issubclass(item, (str, int, float)):
            return item
    return None


def check_ranges(func: Callable, values: dict) -> None:
    """Python callers get the range checks the command line gets from the parameter types (PositiveInt, ...)."""
    import typing

    from .errors import LyricdistError

    for name, hint in typing.get_type_hints(func).items():
        if typing.get_origin(hint) is typing.Literal and values.get(name) not in typing.get_args(hint):
            raise LyricdistError(f"--{name.replace('_', '-')} must be one of {', '.join(map(str, typing.get_args(hint)))}"
                                 f", got {values.get(name)!r}")
        items = [values.get(name)]
        optional = [a for a in typing.get_args(hint) if a is not type(None)]
        if type(None) in typing.get_args(hint) and len(optional) == 1 and _listed_scalar(hint) is None:
            hint = optional[0]  # X | None: None passes, other values are checked as X
        if _listed_scalar(hint) is not None:
            hint, items = _listed_scalar(hint), list(values.get(name) or [])
        if isinstance(hint, type) and issubclass(hint, (int, float)) and hint not in (int, float, bool):
            for value in items:
                try:
                    if value is not None:
                        hint(value)
                except (TypeError, ValueError) as e:
                    said = re.search(r"restriction (.*)$", str(e))
                    reason = RESTRICTIONS.get(said.group(1).strip(), str(e)) if said else str(e)
                    raise LyricdistError(f"--{name.replace('_', '-')} {reason}, got {value!r}") from None


def call(func: Callable, args, **given):
    """`func` called with its parameters' values from parsed `args` (other options are the caller's), or `given`."""
    import inspect

    return func(**{name: given[name] if name in given else args[name] for name in inspect.signature(func).parameters})


def function_parser(func: Callable, positional: str | None = None, **options):
    """A parser for a command that is the typed function `func` (see add_signature_options for `options`)."""
    import inspect

    parser = new_parser((inspect.getdoc(func) or "").split("\n\n")[0].replace("\n", " "))
    add_signature_options(parser, func, positional, **options)
    return parser


def new_parser(description: str):
    """A jsonargparse parser that raises on bad arguments (the caller prints one line) instead of exiting."""
    from jsonargparse import ArgumentParser

    return ArgumentParser(description=description, exit_on_error=False)
