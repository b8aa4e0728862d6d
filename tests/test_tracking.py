"""wandb tracking: an offline run read back with wandb's own reader of the .wandb record file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import CONFIGS, read_text_tree, run_cli, tiny_config
from lyricdist.train import train
from lyricdist.tracking import scrub, wandb_mode

FAKE_WANDB_KEY = "wandbkey-" + "9" * 31
FAKE_GENIUS = "genius-token-SECRETVALUE123"


def wandb_records(run_root: Path) -> list[dict]:
    """All records of the run's .wandb file, decoded by `wandb leet inspect --json` (wandb's own reader)."""
    files = sorted(run_root.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no .wandb file under {run_root}"
    records = []
    for f in files:
        proc = subprocess.run(["wandb", "leet", "inspect", "--json", str(f)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        records += [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    return records


def _history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


@pytest.mark.slow
def test_offline_run_logs_history_samples_artifacts_and_no_secret(demo_corpus, tmp_path):
    out = tmp_path / "run"
    env = {"WANDB_API_KEY": FAKE_WANDB_KEY, "GENIUS_ACCESS_TOKEN": FAKE_GENIUS}
    run_cli(
        "train", "--config", str(CONFIGS / "tiny.yaml"), f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
        "--tracking.backend=wandb", "--tracking.mode=offline", "--tracking.project=lyricdist-test",
        "--train.max_steps=20", "--train.eval_every=10", "--train.save_every=10", "--samples.temperatures=[0.5,1.0]",
        env=env,
    )
    records = wandb_records(out)
    history = _history(records)
    keys = set().union(*history)
    assert {"train_loss", "lr", "grad_norm", "chars_per_sec", "epoch", "val_loss", "val_bpc"} <= keys
    assert [h["_step"] for h in history if "val_loss" in h] == [10, 20]
    tables = [h for h in history if h.get("samples._type") == "table-file"]
    assert [t["_step"] for t in tables] == [10, 20] and all(t["samples.nrows"] == 2 for t in tables)
    table_files = list(out.glob("wandb/offline-run-*/files/media/table/samples_*.table.json"))
    table = json.loads(table_files[0].read_text())
    assert table["columns"] == ["step", "primetext", "temperature", "text"]
    assert [row[2] for row in table["data"]] == [0.5, 1.0] and all(len(row[3]) == 40 for row in table["data"])
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "model"]
    assert len(artifacts) == 2
    aliases = {alias for a in artifacts for alias in a.get("aliases", [])}
    assert {"latest", "best"} <= aliases
    meta = json.loads(artifacts[-1]["metadata"])
    assert meta["step"] == 20 and meta["val_loss"] > 0
    config = [r for r in records if r["type"] == "config"]
    logged = json.dumps(config)
    assert "seq_len" in logged and "hidden_size" in logged and "out_dir" in logged  # the full resolved config
    # no secret anywhere under the run directory (wandb files, checkpoints, state, metrics, logs)
    everything = read_text_tree(out)
    assert FAKE_WANDB_KEY not in everything and FAKE_GENIUS not in everything

    # a resumed run continues the same wandb run id
    run_id = json.loads((out / "state" / "trainer_state.json").read_text())["wandb_run_id"]
    run_cli(
        "train", "--config", str(CONFIGS / "tiny.yaml"), f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
        "--tracking.backend=wandb", "--tracking.mode=offline", "--tracking.project=lyricdist-test",
        "--train.max_steps=30", "--train.eval_every=10", "--resume", env=env,
    )
    runs = [r["run"]["run_id"] for r in wandb_records(out) if r["type"] == "run"]
    assert set(runs) == {run_id}


def test_samples_do_not_change_training(demo_corpus, tmp_path):
    args = ["--model.dropout=0.3", "--model.num_layers=2", "--train.max_steps=20", "--train.eval_every=5",
            "--train.log_every=1", "--samples.length=30"]
    train(tiny_config(demo_corpus, tmp_path / "on", *args, "--samples.enabled=true"))
    train(tiny_config(demo_corpus, tmp_path / "off", *args, "--samples.enabled=false"))
    read = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    on, off = read(tmp_path / "on"), read(tmp_path / "off")
    assert [r["train_loss"] for r in on] == [r["train_loss"] for r in off]
    assert [r["val_loss"] for r in on] == [r["val_loss"] for r in off]
    samples = [json.loads(l) for l in (tmp_path / "on" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [5, 5, 10, 10, 15, 15, 20, 20]
    assert not (tmp_path / "off" / "samples.jsonl").exists()


def test_mode_defaults(monkeypatch, demo_corpus, tmp_path):
    cfg = tiny_config(demo_corpus, tmp_path, "--tracking.backend=wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert wandb_mode(cfg) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    assert wandb_mode(cfg) == "online"
    cfg.tracking.mode = "disabled"
    assert wandb_mode(cfg) is None
    cfg.tracking.mode, cfg.tracking.backend = None, "none"
    assert wandb_mode(cfg) is None


def test_scrub_removes_secrets(monkeypatch):
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", FAKE_GENIUS)
    cleaned = scrub({"a": {"api_key": "x", "note": f"uses {FAKE_GENIUS}"}, "tags": [FAKE_GENIUS, "ok"], "lr": 1,
                     "max_tokens": 5})
    assert cleaned == {"a": {"api_key": "<redacted>", "note": "<redacted>"}, "tags": ["<redacted>", "ok"], "lr": 1,
                       "max_tokens": 5}
