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
    sweep = ["0", "0.25", "0.5", "1", "2", "4"]  # the default guidance sweep
    assert set(r["collab"]) == {f"alternate w={w}" for w in sweep} | {"blend", "condition"}
    assert set(r["generator_guided_val_nats"]) == set(sweep[1:])
    real = r["real_segments"]
    assert 0 < real["word_validity"] <= 1 and set(real["nats"]) == {"own", "other", "reference"}
    for w in sweep:
        row = r["collab"][f"alternate w={w}"]
        assert row["guidance"] == float(w) and row["segments"] == 4 and 0 <= row["judge_attribution"] <= 1
        assert 0 <= row["word_validity"] <= 1 and all(v > 0 for v in row["nats"].values())
        assert set(row["copying"]) == {"Juniper Vale", "DJ Kilowatt"}
        for c in row["copying"].values():
            assert 0 <= c["word_ngram_share"] <= 1 and c["heldout_word_ngram_share"] is not None
            assert 0 <= c["segments_over_p90"] <= c["segments"] == 2
        assert set(row["meets"]) == {"attribution", "copying", "fluency"}
    passing = [float(w) for w in sweep if all(r["collab"][f"alternate w={w}"]["meets"].values())]
    assert r["chosen_guidance"] == (min(passing) if passing else None)
    for key in ("blend", "condition"):
        assert 0 <= r["collab"][key]["judge_p_a"] <= 1 and set(r["collab"][key]["similarity"]) == set(r["artists"])
    # The training curves: the generator's with its swap gap, the unconditioned reference's without.
    gen, ref = r["curves"]["generator"], r["curves"]["reference"]
    assert [p["step"] for p in gen["curve"]] == [20, 40, 60] and all("swap_gap" in p for p in gen["curve"])
    assert ref["config"]["model"]["artist_embedding_dim"] == 0 and "swap_gap" not in ref["curve"][-1]
    assert gen["curve"][-1]["val_loss"] < gen["curve"][0]["val_loss"] and gen["cpu_s"] > 0
    assert set(r["seconds"]) == {"prepare", "judge", "similarity", "generator + reference", "collab", "scoring"}
    table = proc.stdout
    assert "| similarity: held-out songs attributed |" in table and "| artist-swap gap" in table
    assert "generator training curve" in table and "| real held-out segments |" in table
    assert "lyricdist.generate.DEFAULT_GUIDANCE" in table and "wall time: prepare" in table
    again = subprocess.run([sys.executable, str(SCRIPT), "--table", str(report)], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and table.strip().endswith(again.stdout.strip())  # a saved result, the same table
