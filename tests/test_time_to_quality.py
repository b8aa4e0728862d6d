"""scripts/bench/time_to_quality.py runs end to end, and its recipes say what the issue asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO

SCRIPT = REPO / "scripts" / "bench" / "time_to_quality.py"


@pytest.mark.slow
def test_time_to_quality_smoke(demo_corpus, tmp_path):
    """Both arms train, are scored and reported; no wall-clock assertions (shared CI machines vary)."""
    png, report = tmp_path / "curves.png", tmp_path / "curves.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(CONFIGS / "tiny.yaml"), "--corpus", str(demo_corpus),
         "--device", "cpu", "--budget-s", "2", "--eval-every-s", "1", "--png", str(png), "--json", str(report)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "\nlyricdist: " in out and "\nplain: " in out
    assert any(line.startswith("lyricdist |") for line in out.splitlines())
    assert any(line.startswith("plain     |") for line in out.splitlines())
    verdicts = [line for line in out.splitlines() if line.startswith("verdict (")]
    assert [v.split(")")[0] for v in verdicts] == ["verdict (state carried", "verdict (zero-state windows"], out
    assert all(" ends lower by " in v or " tie " in v for v in verdicts), out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arms = json.loads(report.read_text())["arms"]
    assert set(arms) == {"lyricdist", "plain"}
    for arm in arms.values():
        times = [p["train_s"] for p in arm["points"]]
        assert len(times) >= 2 and times == sorted(set(times)), times
        assert arm["points"][-1]["steps"] > 0
    # Same seed, same parameter order, one fp32 evaluator: both arms start from the same loss under both protocols.
    for key in ("val_loss", "val_loss_windows"):
        assert arms["lyricdist"]["points"][0][key] == arms["plain"]["points"][0][key], key


def test_shakespeare_cpu_recipe_is_the_issues():
    """2 x 256 one-hot LSTM, 50 x 50 chars, Adam 2e-3, clip 5, no dropout, on the CPU; the GPU recipe is Adam too
    (the plain loop's optimizer, so the benchmark compares like with like)."""
    from lyricdist.train import load_config

    cpu = load_config(CONFIGS / "shakespeare-cpu.yaml")
    m, t = cpu.model, cpu.train
    assert (m.cell, m.num_layers, m.hidden_size, m.embedding_dim, m.dropout) == ("lstm", 2, 256, 0, 0.0)
    assert (t.batch_size, t.seq_len, t.optimizer, t.lr, t.grad_clip, t.cpu) == (50, 50, "adam", 2e-3, 5.0, True)
    assert cpu.data.corpus == "corpus/tinyshakespeare"
    gpu = load_config(CONFIGS / "shakespeare-gpu.yaml")
    assert (gpu.train.optimizer, gpu.train.weight_decay, gpu.train.cpu) == ("adam", 0.0, False)
    assert gpu.data.corpus == "corpus/tinyshakespeare"


def test_missing_corpus_is_one_line(tmp_path):
    """A config whose corpus is absent (and is not tinyshakespeare) says to pass --corpus, in one line."""
    config = tmp_path / "c.yaml"
    config.write_text((CONFIGS / "tiny.yaml").read_text().replace("corpus/demo", str(tmp_path / "absent")))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), "--device", "cpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "pass --corpus" in proc.stderr, proc.stderr
