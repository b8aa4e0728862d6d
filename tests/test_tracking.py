"""wandb tracking: an offline run read back with wandb's own reader of the .wandb record file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import CONFIGS, read_text_tree, run_cli, tiny_config
from lyricdist.train import train
from lyricdist.tracking import Tracker, scrub, wandb_mode

FAKE_WANDB_KEY = "wandbkey-" + "9" * 40  # wandb accepts keys of 40+ characters
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


def wandb_segments(run_root: Path) -> list[dict]:
    """One entry per offline .wandb file, in start order: its run record and its history rows."""
    segments = []
    for f in run_root.glob("wandb/offline-run-*/run-*.wandb"):
        proc = subprocess.run(["wandb", "leet", "inspect", "--json", str(f)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
        run = next(r["run"] for r in records if r["type"] == "run")
        segments.append({"run": run, "history": _history(records)})
    return sorted(segments, key=lambda s: s["run"]["start_time"])


def synced_history(segments: list[dict]) -> list[dict]:
    """The history `wandb sync` gives the run: the files in start order, a rewind (`resume_from`, recorded as the
    run record's branch_point on the same run id) first truncating what is there to steps <= its step."""
    rows: list[dict] = []
    for seg in segments:
        bp = seg["run"].get("branch_point")
        if bp and bp.get("run") == seg["run"]["run_id"]:
            assert bp["metric"] == "_step"
            rows = [h for h in rows if h["_step"] <= bp["value"]]
        rows += seg["history"]
    return rows


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
    # the corpus, as a dataset artifact each model artifact names (memorisation checks of a download fetch it)
    corpora = [r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "dataset"]
    assert [c["name"] for c in corpora] == [f"corpus-{demo_corpus.name}"] == [meta["corpus_artifact"]]
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
    def read(d):
        return [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    on, off = read(tmp_path / "on"), read(tmp_path / "off")
    assert [r["train_loss"] for r in on] == [r["train_loss"] for r in off]
    assert [r["val_loss"] for r in on] == [r["val_loss"] for r in off]
    samples = [json.loads(l) for l in (tmp_path / "on" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [5, 5, 10, 10, 15, 15, 20, 20]
    assert not (tmp_path / "off" / "samples.jsonl").exists()


def test_mode_defaults(monkeypatch, demo_corpus, tmp_path):
    """Explicit modes (credentials are asked for only without one: test_a_key_stored_by_wandb_login_...)."""
    cfg = tiny_config(demo_corpus, tmp_path, "--tracking.backend=wandb")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment's mode wins over credentials
    assert wandb_mode(cfg) == "offline"
    cfg.tracking.mode = "online"  # and the config's over the environment's
    assert wandb_mode(cfg) == "online"
    cfg.tracking.mode = "disabled"
    assert wandb_mode(cfg) is None
    cfg.tracking.mode, cfg.tracking.backend = None, "none"
    assert wandb_mode(cfg) is None


DECIDE = """
from types import SimpleNamespace as S
from lyricdist.tracking import wandb_decision
print("MODE", *wandb_decision(S(tracking=S(backend="wandb", mode=None))))
"""


def _decide(env: dict) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, "-c", DECIDE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("MODE "))
    return line, proc.stdout + proc.stderr


def _wandb_free_env(tmp_path: Path) -> dict:
    """This environment without any WANDB_* variable, in a fresh HOME (no ~/.netrc) and wandb config dir."""
    import os

    (tmp_path / "home").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    return {**env, "HOME": str(tmp_path / "home"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_DIR": str(tmp_path / "wandb-dir"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache")}


@pytest.mark.slow
def test_a_key_stored_by_wandb_login_makes_runs_online(tmp_path):
    """No WANDB_API_KEY: the run is online when `wandb login` stored a key (in the temporary HOME's ~/.netrc, for
    the server it was given), offline when none is stored. wandb itself is asked; the server is a fake on
    127.0.0.1 (wandb's "logged in as" line asks it who the key belongs to)."""
    from fake_wandb import FakeWandb

    env = _wandb_free_env(tmp_path)
    with FakeWandb() as wb:
        line, _ = _decide({**env, "WANDB_BASE_URL": wb.url})
        assert line.startswith("MODE offline no wandb credentials"), line
        assert not (tmp_path / "home" / ".netrc").exists()  # asking wrote nothing

        login = subprocess.run(["wandb", "login", "--host", wb.url, FAKE_WANDB_KEY], env=env, capture_output=True,
                               text=True, timeout=120)
        assert login.returncode == 0, login.stderr
        assert FAKE_WANDB_KEY in (tmp_path / "home" / ".netrc").read_text()  # what `wandb login` stores

        line, output = _decide(env)  # the server `wandb login --host` saved in wandb's settings
        assert line.startswith("MODE online wandb has credentials"), line
        assert FAKE_WANDB_KEY not in output
        # a key stored for another server is not a credential for this one
        line, _ = _decide({**env, "WANDB_BASE_URL": "http://127.0.0.1:9"})
        assert line.startswith("MODE offline"), line
    # WANDB_API_KEY alone is a credential; a malformed one is named, and the run stays offline
    line, _ = _decide({**_wandb_free_env(tmp_path / "other"), "WANDB_API_KEY": FAKE_WANDB_KEY,
                       "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert line.startswith("MODE online"), line
    line, output = _decide({**_wandb_free_env(tmp_path / "other"), "WANDB_API_KEY": "short"})
    assert line.startswith("MODE offline wandb's credentials are unusable (WANDB_API_KEY invalid"), line


@pytest.mark.slow
def test_training_says_which_mode_and_logs_summaries_group_and_job_type(demo_corpus, tmp_path):
    """Without credentials a run says on start-up that it is offline and why; its wandb run has a group (the
    corpus), a job type, and min summaries of val_loss and val_bpc."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lyricdist", "train", "--config", str(CONFIGS / "tiny.yaml"),
                           f"--data.corpus={demo_corpus}", f"--train.out_dir={out}", "--tracking.backend=wandb",
                           "--train.max_steps=10", "--train.eval_every=5"],
                          env=_wandb_free_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wandb: offline (no wandb credentials: run `wandb login` or set WANDB_API_KEY" in proc.stderr, proc.stderr
    records = wandb_records(out)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["job_type"] == "train" and run["run_group"] == demo_corpus.name, run
    metrics = {r["metric"]["name"]: r["metric"] for r in records if r["type"] == "metric" and "name" in r["metric"]}
    assert set(metrics) >= {"val_loss", "val_bpc"}, metrics
    assert all(metrics[k]["summary"].get("min") for k in ("val_loss", "val_bpc")), metrics


def test_scrub_removes_secrets(monkeypatch):
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", FAKE_GENIUS)
    cleaned = scrub({"a": {"api_key": "x", "note": f"uses {FAKE_GENIUS}"}, "tags": [FAKE_GENIUS, "ok"], "lr": 1,
                     "max_tokens": 5})
    assert cleaned == {"a": {"api_key": "<redacted>", "note": "<redacted>"}, "tags": ["<redacted>", "ok"], "lr": 1,
                       "max_tokens": 5}


CRASH_AT_30 = """
import sys
from lyricdist.tracking import Tracker
log = Tracker.log
def crashing_log(self, metrics, step):
    log(self, metrics, step)
    if step >= 30:
        raise RuntimeError("simulated crash after logging step 30")
Tracker.log = crashing_log
from lyricdist.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_resume_after_a_crash_rewinds_the_wandb_run_to_the_saved_step(demo_corpus, tmp_path):
    """State saved at 20, the run logs up to 30 and crashes; the resumed run's history is one continuous series."""
    out = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / "tiny.yaml"), f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
            "--tracking.backend=wandb", "--tracking.mode=offline", "--tracking.project=lyricdist-test",
            "--train.max_steps=40", "--train.eval_every=10", "--train.save_every=20", "--train.log_every=5",
            "--samples.temperatures=[1.0]"]
    crashed = subprocess.run([sys.executable, "-c", CRASH_AT_30, *args], capture_output=True, text=True, timeout=300)
    assert crashed.returncode == 1 and "simulated crash" in crashed.stderr, crashed.stdout + crashed.stderr
    state = json.loads((out / "state" / "trainer_state.json").read_text())
    assert state["step"] == 20
    run_id = state["wandb_run_id"]
    run_cli(*args, "--resume")

    segments = wandb_segments(out)
    assert len(segments) == 2 and {s["run"]["run_id"] for s in segments} == {run_id}
    crashed_seg, resumed_seg = segments
    assert [h["_step"] for h in crashed_seg["history"] if "train_loss" in h] == [5, 10, 15, 20, 25, 30]
    assert not crashed_seg["run"].get("branch_point")
    assert min(h["_step"] for h in resumed_seg["history"]) == 25

    history = synced_history(segments)
    steps = [h["_step"] for h in history]
    assert steps == sorted(set(steps)), f"steps repeat or go back: {steps}"
    assert [h["_step"] for h in history if "train_loss" in h] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [h["_step"] for h in history if "val_loss" in h] == [10, 20, 30, 40]
    # because the resumed segment rewinds the same run to the saved step (wandb's resume_from)
    assert resumed_seg["run"]["branch_point"] == {"run": run_id, "metric": "_step", "value": 20}
    # the rows kept from before the crash are the crashed run's own (steps <= 20), the rest are the resumed run's
    before = {h["_step"]: h["train_loss"] for h in crashed_seg["history"] if "train_loss" in h}
    after = {h["_step"]: h["train_loss"] for h in resumed_seg["history"] if "train_loss" in h}
    assert {h["_step"]: h["train_loss"] for h in history if "train_loss" in h} == {
        **{s: v for s, v in before.items() if s <= 20}, **after}
    metrics = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [5, 10, 15, 20, 25, 30, 35, 40]


class FakeAccelerator:
    """What Tracker uses of accelerate: init_trackers (recorded; optionally refusing a rewind), get_tracker."""

    is_main_process = True

    def __init__(self, refuse_rewind: bool = False):
        self.refuse_rewind = refuse_rewind
        self.inits: list[dict] = []

    def init_trackers(self, project, config=None, init_kwargs=None):
        self.inits.append({"config": config, **init_kwargs["wandb"]})
        if self.refuse_rewind and "resume_from" in init_kwargs["wandb"]:
            raise RuntimeError("failed to rewind run: rewind is not enabled for this entity")

    def get_tracker(self, name, unwrap=False):
        return SimpleNamespace(dir="/nowhere/files", use_artifact=lambda artifact: None,
                               log_artifact=lambda artifact, **kw: None, define_metric=lambda name, **kw: None)


def _logged(out: Path, steps: list[int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train_loss": 1.0}) + "\n" for s in steps))


def test_tracker_resume_kwargs(demo_corpus, tmp_path, monkeypatch):
    """New run: a fresh id. Resume where nothing was logged past the state: resume="allow". Resume after a crash
    that logged past the state: resume_from=ID?_step=S (rewind), never together with `resume`."""
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", FAKE_GENIUS)
    cfg = tiny_config(demo_corpus, tmp_path / "run", "--tracking.backend=wandb", "--tracking.mode=online")
    out = tmp_path / "run"

    acc = FakeAccelerator()
    fresh = Tracker(acc, cfg, out)
    assert acc.inits[-1]["id"] == fresh.run_id and "resume_from" not in acc.inits[-1]

    _logged(out, [5, 10, 15, 20])
    Tracker(acc, cfg, out, run_id="abc123", resume_step=20)
    kw = acc.inits[-1]
    assert (kw["id"], kw["resume"]) == ("abc123", "allow") and "resume_from" not in kw

    _logged(out, [5, 10, 15, 20, 25, 30])
    tracker = Tracker(acc, cfg, out, run_id="abc123", resume_step=20)
    kw = acc.inits[-1]
    assert kw["resume_from"] == "abc123?_step=20" and kw["id"] == "abc123" and "resume" not in kw
    assert tracker.run_id == "abc123"
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15, 20]
    assert FAKE_GENIUS not in json.dumps(kw["config"])

    # a line cut short by the crash (after step 20) also means the run went past the state
    (out / "metrics.jsonl").write_text(json.dumps({"step": 20}) + "\n" + '{"step": 2')
    Tracker(acc, cfg, out, run_id="abc123", resume_step=20)
    assert acc.inits[-1]["resume_from"] == "abc123?_step=20"


def test_tracker_falls_back_to_a_linked_new_run_when_the_server_refuses_rewind(demo_corpus, tmp_path, monkeypatch):
    """Rewind is a W&B server feature some deployments lack: the resumed history then goes to a new run (steps
    after S only, never renumbered) whose config names the run and step it continues; its id is the one saved."""
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", FAKE_GENIUS)
    cfg = tiny_config(demo_corpus, tmp_path / "run", "--tracking.backend=wandb", "--tracking.mode=online")
    out = tmp_path / "run"
    _logged(out, [5, 10, 15, 20, 25, 30])
    acc = FakeAccelerator(refuse_rewind=True)
    tracker = Tracker(acc, cfg, out, run_id="abc123", resume_step=20)
    assert [kw.get("resume_from") for kw in acc.inits] == ["abc123?_step=20", None]
    retry = acc.inits[-1]
    assert "resume" not in retry and retry["id"] == tracker.run_id != "abc123"
    assert retry["config"]["resumed_from"] == {"run_id": "abc123", "step": 20}
    assert FAKE_GENIUS not in json.dumps(retry["config"])
