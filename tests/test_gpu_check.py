"""scripts/gpu_check.py's dry run: every phase of the prepared GPU check runs on the CPU, with tiny shapes, and
writes its JSON and PNG, so the command a lent GPU runs cannot rot between the sessions that have one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_phase(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["environment"]["device"] == "cpu"
    assert len(report["precision"]) == 2
    for row in report["precision"]:
        assert "error" not in row, row
        assert row["precision"].startswith("precision: RNN in ") and row["profile"]["launches"] > 0
        assert row["sync_free"]["steps"] == 20
    assert report["tests"]["returncode"] in (0, 5) and "skipped" in report["tests"]["summary"]  # no CUDA: all skip
    arms = {r["arm"] for r in report["throughput"]["rows"]}
    assert {"lyricdist:auto", "plain:fp32"} <= arms
    assert set(report["quality"]["curves"]["arms"]) == {"lyricdist", "plain"}
    assert (tmp_path / "gpu_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "== lyricdist GPU check" in proc.stdout


def test_gpu_check_refuses_to_run_without_cuda_unless_dry(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the real check would run")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr and proc.stderr.strip().count("\n") == 0
