"""The throughput benchmark runs end to end (2 steps, small synthetic corpus, CPU): a smoke test, not a timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_train_throughput_smoke(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench" / "train_throughput.py"), "--corpus-chars", "3e5",
         "--steps", "2", "--warmup", "1", "--repeats", "1", "--regimes", "4x256@128x40", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    arms = {r["arm"] for r in rows}
    assert {"lyricdist:auto", "plain:fp32"} <= arms
    for r in rows:
        assert r["chars_per_s"] > 0 and r["peak_mb"] > 0 and 0 < r["flop_share"] < 1.5
        assert "rnn" in r["kernel"].lower(), r["kernel"]  # the profiler saw the fused RNN op
        if r["arm"].startswith("lyricdist"):
            assert r["syncs_per_step"] == 0, r
            assert 0.5 < r["scored"] <= 1.0, r  # B x T counted, the real-target share reported beside it
        else:
            assert r["scored"] == 1.0, r
    assert "4x256@128x40" in proc.stdout and "lyricdist:auto" in proc.stdout


@pytest.mark.slow
def test_big_corpus_quick(tmp_path):
    """scripts/bench/big_corpus.py --quick end to end (small generated corpora, 1 and 2 ranks): every rank reports
    its set-up phases, and a rank's tables are its share (half of them with 2 ranks), about 2 bytes a character."""
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench" / "big_corpus.py"), "--quick", "--workdir",
         str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {(r["name"], r["ranks"]): r for r in json.loads(out.read_text())}
    assert set(rows) == {(n, w) for n in ("control", "songs", "text") for w in (1, 2)}
    for (name, w), r in rows.items():
        assert r["has_phases"] and len(r["ranks_rows"]) == w, (name, w)
        assert r["peak_rss_bytes"] >= r["setup_rss_bytes"] > 0 and r["first_step_s"] > 0
        share = r["corpus_chars"] / w
        if name != "control":
            assert 1.9 <= r["table_bytes"] / share <= 2.2, (name, w)  # x, y one byte each; resets, artists per chunk
    for name in ("songs", "text"):
        assert rows[(name, 2)]["table_bytes"] / rows[(name, 1)]["table_bytes"] == pytest.approx(0.5, abs=0.02)
    assert "1 GB corpus on 8 GPUs" in proc.stdout and "one document / many songs" in proc.stdout
