"""`lyricdist plot`: curves from metrics.jsonl, several runs overlaid; the wall clock each row records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import CONFIGS, run_cli, tiny_config
from lyricdist.config import RunConfig
from lyricdist.curves import make_figure, read_metrics
from lyricdist.tracking import Tracker
from lyricdist.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(demo_corpus, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("plot")
    runs = []
    for name, lr in (("fast", "0.02"), ("slow", "0.002")):
        out = root / name
        train(tiny_config(demo_corpus, out, "--train.max_steps=20", f"--train.lr={lr}", "--samples.enabled=false"))
        runs.append(out)
    return runs


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_metrics_rows_carry_increasing_wall_clock(two_runs):
    for run in two_runs:
        walls = [r["wall_s"] for r in read_metrics(run)]
        assert len(walls) == 4 and all(w > 0 for w in walls) and walls == sorted(walls), walls


def test_plot_cli_overlays_two_runs(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    proc = run_cli("plot", *map(str, two_runs), "--out", str(out), "--title", "two runs")
    assert f"wrote {out}" in proc.stdout
    width, height = _png_size(out.read_bytes())
    assert width > height > 400  # a 2 x 2 grid of panels


def test_figure_holds_each_runs_series_in_nats_with_a_bits_axis(two_runs):
    import matplotlib.pyplot as plt

    runs = {run.name: read_metrics(run) for run in two_runs}
    fig = make_figure(runs)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert [ax.get_title() for ax in panels] == ["loss vs step", "loss vs time", "throughput", "learning rate"]
        by_step, by_time, speed, lr = panels
        for name, rows in runs.items():
            lines = {l.get_label(): l for l in by_step.get_lines()}
            val = [r for r in rows if r["val_loss"] is not None]
            assert list(lines[f"{name} val"].get_xdata()) == [r["step"] for r in val]
            assert list(lines[f"{name} val"].get_ydata()) == [r["val_loss"] for r in val]
            assert list(lines[f"{name} train"].get_ydata()) == [r["train_loss"] for r in rows]
            timed = {l.get_label(): l for l in by_time.get_lines()}
            assert list(timed[f"{name} train"].get_xdata()) == [r["wall_s"] for r in rows]
            assert list({l.get_label(): l for l in lr.get_lines()}[name].get_ydata()) == [r["lr"] for r in rows]
            assert name in [t.get_text() for t in speed.get_legend().get_texts()]
        # The right-hand axis of a loss panel reads bits/char: nats / ln 2.
        fig.canvas.draw()
        for panel in (by_step, by_time):
            (bits,) = [ax for ax in panel.child_axes if ax.get_ylabel() == "bits/char"]
            nats_lo, nats_hi = panel.get_ylim()
            assert bits.get_ylim() == pytest.approx((nats_lo / math.log(2), nats_hi / math.log(2)))
    finally:
        plt.close(fig)


def test_a_run_without_wall_clock_gets_no_time_panel(tmp_path):
    import matplotlib.pyplot as plt

    rows = [{"step": s, "train_loss": 3.0 - s / 10, "val_loss": None, "lr": 0.01} for s in (5, 10)]
    fig = make_figure({"old": rows})
    try:
        assert [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()] == [
            "loss vs step", "learning rate"]
    finally:
        plt.close(fig)


def test_bad_runs_are_one_line_errors_and_write_nothing(tmp_path):
    out = tmp_path / "curves.png"
    proc = run_cli("plot", str(tmp_path / "absent"), "--out", str(out), check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "has no metrics.jsonl" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    proc = run_cli("plot", str(empty), "--out", str(out), check=False)
    assert proc.returncode == 1 and "holds no metrics" in proc.stderr
    assert not out.exists()


def test_resumed_run_continues_its_wall_clock(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "train_loss": 1.0, "wall_s": 10.0 * s}) + "\n" for s in (5, 10, 15)))
    cfg = RunConfig()
    cfg.tracking.backend = "none"
    tracker = Tracker(SimpleNamespace(is_main_process=True), cfg, tmp_path, run_id="r", resume_step=10)
    tracker.log({"train_loss": 0.5}, 11)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [5, 10, 11]
    assert rows[-1]["wall_s"] >= 100.0  # the resumed clock starts where step 10 left it, not at 0


@pytest.mark.slow
def test_wandb_run_gets_the_curves_image(demo_corpus, tmp_path):
    from test_tracking import wandb_records

    out = tmp_path / "run"
    run_cli("train", "--config", str(CONFIGS / "tiny.yaml"), f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
            "--tracking.backend=wandb", "--tracking.mode=offline", "--tracking.project=lyricdist-test",
            "--train.max_steps=10", "--samples.enabled=false")
    images = [r["history"]["item"] for r in wandb_records(out) if r["type"] == "history"
              and r["history"]["item"].get("curves._type") == "image-file"]
    assert len(images) == 1 and images[0]["_step"] == 10, images
    media = list(out.glob("wandb/offline-run-*/files/media/images/curves_*.png"))
    assert len(media) == 1 and _png_size(media[0].read_bytes())[0] > 400
    assert (out / "curves.png").read_bytes() == media[0].read_bytes()
