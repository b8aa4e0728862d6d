"""plot: training curves of one or more runs into one PNG (the figure is lyricdist.curves')."""

from __future__ import annotations

from pathlib import Path

from .curves import _labels, read_metrics, render_png
from .errors import LyricdistError
from .fileio import atomic_write_bytes
from .options import call, function_parser


def plot(runs: list[str], out: str = "curves.png", title: str | None = None) -> Path:
    """Plot the curves of RUNS (training out_dirs or metrics.jsonl files), overlaid, into one PNG.

    Args:
        runs: training out_dirs (or their metrics.jsonl files)
        out: the PNG to write (atomically)
        title: figure title (default: none)
    """
    if not runs:
        raise LyricdistError("no RUN given; e.g. `lyricdist plot runs/a runs/b --out curves.png`")
    if not str(out).lower().endswith(".png"):
        raise LyricdistError(f"--out {out} must be a .png file")
    data = {label: read_metrics(run) for label, run in zip(_labels(runs), runs)}
    path = Path(out)
    atomic_write_bytes(path, render_png(data, title=title))
    return path


def cli_parser():
    return function_parser(plot, words="runs")


def cli_run(parser, args) -> int:
    path = call(plot, args)
    print(f"wrote {path}")
    return 0
