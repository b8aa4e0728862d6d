"""The main job (`lyricdist demo`): the bundled corpus without a token, a Ray scrape of Genius with one."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from fake_genius import FakeGenius, catalogue


@pytest.mark.slow
def test_demo_without_token_trains_on_the_bundled_corpus_and_prints_samples(tmp_path):
    proc = run_cli("demo", "--out", str(tmp_path / "demo"), "--max_steps", "10",
                   env={"GENIUS_ACCESS_TOKEN": "", "WANDB_MODE": "offline"})
    assert "bundled demo corpus" in proc.stdout
    assert proc.stdout.count("--- sample (temperature") == 2
    meta = json.loads((tmp_path / "demo" / "corpus" / "meta.json").read_text())
    assert sorted(meta["artists"]) == ["DJ Kilowatt", "Juniper Vale"]
    assert (tmp_path / "demo" / "train" / "checkpoints" / "best" / "model.safetensors").exists()
    assert list((tmp_path / "demo" / "train" / "wandb").glob("offline-run-*"))  # wandb offline by default
    from test_tracking import wandb_records

    runs = [r["run"] for r in wandb_records(tmp_path / "demo" / "train") if r["type"] == "run"]
    assert [r["display_name"] for r in runs] == ["demo"]  # named after the demo, not its `train` directory


@pytest.mark.slow
def test_demo_with_token_scrapes_genius_with_ray_then_trains(tmp_path, monkeypatch):
    from lyricdist.demo import run_demo

    with FakeGenius(catalogue()) as fake:
        for key, value in fake.env.items():
            monkeypatch.setenv(key, value)
        ckpt = run_demo(
            str(tmp_path / "demo"), max_steps=4, artist=["Juniper Vale", "DJ Kilowatt"], max_songs=5,
            overrides=["--train.batch_size=2", "--train.seq_len=8", "--tracking.backend=none",
                       "--samples.enabled=false"],
        )
        assert fake.request_count("/web/") > 0
        token = fake.env["GENIUS_ACCESS_TOKEN"]
    meta = json.loads((tmp_path / "demo" / "corpus" / "meta.json").read_text())
    assert sorted(meta["artists"]) == ["DJ Kilowatt", "Juniper Vale"]
    assert meta["sources"][0]["source"].startswith("genius:")
    assert (ckpt / "model.safetensors").exists()
    for path in (tmp_path / "demo").rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
