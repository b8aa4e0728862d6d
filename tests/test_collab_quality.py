"""scripts/bench/collab_quality.py --quick runs end to end on the bundled demo corpus (a smoke run, not a timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "bench" / "collab_quality.py"


@pytest.mark.slow
def test_collab_quality_quick(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn is the benchmark's judge: pip install -e '.[bench]'")
    report = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "work"), "--json", str(report)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(report.read_text())
    assert r["artists"] == ["Juniper Vale", "DJ Kilowatt"]
    for key in ("judge_songs", "judge_segments", "similarity_pairs", "similarity_songs", "similarity_segments"):
        assert 0 <= r[key] <= 1, key
    assert r["judge_songs"] >= 0.75 and r["similarity_songs"] >= 0.75  # two very different demo styles
    assert r["generator_val_nats"] > 0 and abs(r["swap_gap"]) < 5
    assert set(r["collab"]) == {"alternate", "alternate w=4", "alternate w=8", "blend", "condition"}
    assert set(r["generator_guided_val_nats"]) == {"4", "8"}
    for key in ("alternate", "alternate w=4", "alternate w=8"):
        row = r["collab"][key]
        assert row["segments"] == 4 and 0 <= row["judge_attribution"] <= 1
        assert set(row["copying"]) == {"Juniper Vale", "DJ Kilowatt"}
        for c in row["copying"].values():
            assert 0 <= c["word_ngram_share"] <= 1 and c["heldout_word_ngram_share"] is not None
    for key in ("blend", "condition"):
        assert 0 <= r["collab"][key]["judge_p_a"] <= 1 and set(r["collab"][key]["similarity"]) == set(r["artists"])
    assert set(r["seconds"]) == {"prepare", "judge", "similarity", "generator", "collab", "scoring"}
    table = proc.stdout
    assert "| similarity: held-out songs attributed |" in table and "| artist-swap gap" in table
    assert "collab alternate w=8: single-author segments attributed by the judge" in table
    assert "wall time: prepare" in table
