"""Training curves of one or more runs from their metrics.jsonl, overlaid, as one PNG (no wandb needed): what
`lyricdist plot` draws and what a training run logs to wandb at its end.

Panels: train/validation loss against step and against wall-clock seconds (nats on the left axis, bits per
character on the right), characters per second and learning rate against step. A panel no run has data for is
left out (e.g. a run logged before wall_s was recorded has no time panel).
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

from .errors import LyricdistError

METRICS_FILE = "metrics.jsonl"


def metrics_path(run: str | Path) -> Path:
    """A run's metrics.jsonl: RUN is a training out_dir or the file itself."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise LyricdistError(f"{run} has no {METRICS_FILE}; give a training out_dir (train.out_dir) or the file")
    return path


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl in step order; a line cut short by a crash is skipped with a warning."""
    path = metrics_path(run)
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
        else:
            bad += 1
    if bad:
        print(f"warning: {path}: skipped {bad} unreadable line(s)", file=sys.stderr)
    if not rows:
        raise LyricdistError(f"{path} holds no metrics yet; train for at least train.log_every steps")
    return sorted(rows, key=lambda r: r["step"])


def _series(rows: Sequence[Mapping], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _labels(runs: Sequence[str]) -> list[str]:
    """Each run's directory name, or its path where two runs share a name."""
    names = [metrics_path(r).parent.name or str(r) for r in runs]
    return [n if names.count(n) == 1 else str(metrics_path(r).parent) for n, r in zip(names, runs)]


def make_figure(
    runs: Mapping[str, Sequence[Mapping]],
    title: str | None = None,
    target: float | None = None,
    time_label: str = "wall-clock seconds since the run started",
):
    """The matplotlib figure for {label: metric rows}. Rows use metrics.jsonl's keys: step, wall_s, train_loss,
    val_loss (nats/char), chars_per_sec, lr; `target` draws a horizontal line on the loss panels."""
    from .options import require

    require("matplotlib", "viz", "plotting").use("Agg")
    import matplotlib.pyplot as plt

    def has(x: str, *ys: str) -> bool:
        return any(_series(rows, x, y)[0] for rows in runs.values() for y in ys)

    panels = [
        (kind, x, xlabel)
        for kind, x, xlabel in (
            ("loss", "step", "step"),
            ("loss", "wall_s", time_label),
            ("chars_per_sec", "step", "step"),
            ("lr", "step", "step"),
        )
        if has(x, *(("train_loss", "val_loss") if kind == "loss" else (kind,)))
    ]
    if not panels:
        raise LyricdistError("no run has a loss, speed or learning-rate value to plot")
    cols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.2 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (kind, x, xlabel) in zip(axes.flat, panels):
        for i, (label, rows) in enumerate(runs.items()):
            color = colors[i % len(colors)]
            if kind == "loss":
                xs, ys = _series(rows, x, "train_loss")
                if xs:
                    ax.plot(xs, ys, color=color, lw=1.2, label=f"{label} train")
                xs, ys = _series(rows, x, "val_loss")
                if xs:
                    ax.plot(xs, ys, color=color, lw=1.2, ls="--", marker="o", ms=3, label=f"{label} val")
            else:
                xs, ys = _series(rows, x, kind)
                if xs:
                    ax.plot(xs, ys, color=color, lw=1.2, label=label)
        if kind == "loss":
            if target is not None:
                ax.axhline(target, color="grey", ls=":", label=f"target {target:g}")
            ax.set_ylabel("loss (nats/char)")
            bits = ax.secondary_yaxis("right", functions=(lambda v: v / math.log(2), lambda v: v * math.log(2)))
            bits.set_ylabel("bits/char")
            ax.set_title(f"loss vs {'step' if x == 'step' else 'time'}", fontsize=10)
        else:
            ax.set_ylabel({"chars_per_sec": "characters/s (all processes)", "lr": "learning rate"}[kind])
            ax.set_title({"chars_per_sec": "throughput", "lr": "learning rate"}[kind], fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def render_png(runs: Mapping[str, Sequence[Mapping]], **kw) -> bytes:
    """make_figure(runs, **kw) as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = make_figure(runs, **kw)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
