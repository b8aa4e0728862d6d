"""Training end to end: outputs, distributed equivalence (golden losses), exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIGS, run_cli, tiny_config
from lyricdist.checkpoint import load_checkpoint
from lyricdist.errors import LyricdistError
from lyricdist.train import Trainer, lr_factor, train
from lyricdist.config import TrainConfig

GOLDEN = Path(__file__).parent / "golden" / "tiny_losses.json"
DIST_ARGS = [
    "--model.num_layers=2",
    "--model.dropout=0",
    "--train.batch_size=8",
    "--train.max_steps=12",
    "--train.eval_every=6",
    "--train.log_every=1",
    "--samples.enabled=false",
]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_end_to_end_writes_metrics_and_checkpoints(demo_corpus, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(demo_corpus, out, "--train.max_steps=30", "--train.lr=0.02")
    final = train(cfg)
    rows = read_metrics(out)
    for key in ("step", "train_loss", "val_loss", "val_bpc", "chars_per_sec", "lr"):
        assert all(key in r for r in rows)
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    evals = [r for r in rows if r["val_loss"] is not None]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert abs(evals[-1]["val_bpc"] - evals[-1]["val_loss"] / 0.6931471805599453) < 1e-9
    assert final["val_loss"] == evals[-1]["val_loss"]
    for name in ("last", "best"):
        d = out / "checkpoints" / name
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    model, vocab, info = load_checkpoint(out / "checkpoints" / "last")
    assert info["step"] == 30 and len(vocab) == model.vocab_size
    assert json.loads((out / "checkpoints" / "best" / "config.json").read_text())["val_loss"] == min(
        r["val_loss"] for r in evals
    )


def test_grad_accumulation_is_the_same_math(demo_corpus, tmp_path):
    a = train(tiny_config(demo_corpus, tmp_path / "a", *DIST_ARGS))
    b = train(tiny_config(demo_corpus, tmp_path / "b", *DIST_ARGS, "--train.grad_accum=4"))
    la = [r["train_loss"] for r in read_metrics(tmp_path / "a")]
    lb = [r["train_loss"] for r in read_metrics(tmp_path / "b")]
    assert la == pytest.approx(lb, abs=1e-5)
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_lr_schedules():
    t = TrainConfig(lr_schedule="epoch_decay", lr_decay=0.97, lr_decay_after=10)
    assert lr_factor(9 * 100 + 99, t, 100) == 1.0  # during epoch 10
    assert lr_factor(10 * 100, t, 100) == pytest.approx(0.97)  # after epoch 10 ended
    assert lr_factor(12 * 100, t, 100) == pytest.approx(0.97**3)
    c = TrainConfig(lr_schedule="cosine", max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, c, 50) == pytest.approx(0.1)
    assert lr_factor(10, c, 50) == pytest.approx(1.0)
    assert lr_factor(100, c, 50) == pytest.approx(0.1)


def _losses(out: Path) -> list[float]:
    return [r["train_loss"] for r in read_metrics(out)]


def test_one_process_losses_match_the_golden_file(demo_corpus, tmp_path):
    """The fast tier's guard of the training math: the per-step losses of the golden configuration, in-process."""
    train(tiny_config(demo_corpus, tmp_path / "one", *DIST_ARGS))
    golden = json.loads(GOLDEN.read_text())
    assert golden["args"] == DIST_ARGS
    assert _losses(tmp_path / "one") == pytest.approx(golden["train_loss"], abs=1e-4)


@pytest.mark.slow
def test_two_processes_match_one_process_and_the_golden_file(demo_corpus, tmp_path):
    """torchtitan-style: the per-step losses of a 2-process gloo run equal the 1-process run (and the golden file)."""
    common = [f"--data.corpus={demo_corpus}", *DIST_ARGS]
    run_cli("train", "--config", str(CONFIGS / "tiny.yaml"), *common, f"--train.out_dir={tmp_path / 'one'}")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lyricdist",
         "train", "--config", str(CONFIGS / "tiny.yaml"), *common, f"--train.out_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 12
    assert two == pytest.approx(one, abs=1e-5)
    v1 = [r["val_loss"] for r in read_metrics(tmp_path / "one") if r["val_loss"] is not None]
    v2 = [r["val_loss"] for r in read_metrics(tmp_path / "two") if r["val_loss"] is not None]
    assert v2 == pytest.approx(v1, abs=1e-5) and len(v1) == 2
    if os.environ.get("LYRICDIST_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"args": DIST_ARGS, "train_loss": one}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["args"] == DIST_ARGS
    assert one == pytest.approx(golden["train_loss"], abs=1e-4)


def _train_proc(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lyricdist", "train", "--config", str(CONFIGS / "tiny.yaml"),
         f"--data.corpus={corpus}", f"--train.out_dir={out}", *RESUME_ARGS, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


RESUME_ARGS = [
    "--model.num_layers=2", "--model.hidden_size=48", "--model.dropout=0.2", "--train.max_steps=400",
    "--train.eval_every=100", "--train.save_every=20", "--train.log_every=10", "--train.lr_schedule=cosine",
    "--samples.enabled=true", "--samples.length=20",
]


def _state_step(out: Path) -> int:
    try:
        return json.loads((out / "state" / "trainer_state.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.fixture(scope="module")
def reference_run(demo_corpus, tmp_path_factory) -> Path:
    """One uninterrupted RESUME_ARGS run, the reference of every stop-and-resume test (how often it saves does not
    change what it computes)."""
    out = tmp_path_factory.mktemp("reference") / "ref"
    ref = _train_proc(demo_corpus, out)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    return out


@pytest.mark.slow
def test_sigkill_then_resume_ends_bitwise_equal(demo_corpus, tmp_path, reference_run):

    out = tmp_path / "crash"
    proc = _train_proc(demo_corpus, out)
    deadline = time.time() + 240
    while _state_step(out) < 60 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = _state_step(out)
    assert 60 <= killed_at < 400

    again = _train_proc(demo_corpus, out)  # without --resume: refuses to clobber the run
    assert again.wait(timeout=120) == 1 and "--resume" in again.stderr.read()
    resumed = _train_proc(demo_corpus, out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]

    a = load_file(str(reference_run / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume from step {killed_at}"
    ra, rb = read_metrics(reference_run), read_metrics(out)
    assert [r["step"] for r in rb] == [r["step"] for r in ra]  # lines after the saved step were dropped
    assert [r["train_loss"] for r in rb] == [r["train_loss"] for r in ra]


SAVER = r"""
import sys, torch
from lyricdist.checkpoint import save_checkpoint
from lyricdist.model import CharRNN, ModelConfig
from lyricdist.vocab import Vocab
model = CharRNN(ModelConfig(num_layers=2, hidden_size=256), 50)
vocab = Vocab([chr(65 + i) for i in range(50)])
i = 0
while True:
    i += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(i))
    save_checkpoint(sys.argv[1], model, vocab, step=i)
    print(i, flush=True)
"""


@pytest.mark.slow
def test_kill_mid_save_never_leaves_a_checkpoint_that_loads_wrong(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last"
    for delay in (0.8, 1.1, 1.3, 1.7, 2.2):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(ckpt)], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one complete save
        time.sleep(delay / 4)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        model, _, info = load_checkpoint(ckpt)
        values = {float(v) for p in model.parameters() for v in (p.detach().flatten()[0], p.detach().flatten()[-1])}
        assert values == {float(info["step"])}, "weights and config.json come from different saves"


def test_bad_config_values_are_one_line_errors(demo_corpus, tmp_path):
    """One range system, the fields' types: jsonargparse rejects an override when it parses it, and a Python caller
    that builds the config itself gets the same check when training starts."""
    import argparse

    for override in ("--train.lr=0", "--model.hidden_size=-4", "--samples.temperatures=[0.5,0]"):
        with pytest.raises(argparse.ArgumentError, match="does not conform to restriction"):
            tiny_config(demo_corpus, tmp_path / "x", override)
    for section, key, value, words in [("train", "lr", 0, "train.lr must be > 0, got 0"),
                                       ("model", "hidden_size", -4, "model.hidden_size must be > 0, got -4"),
                                       ("samples", "temperatures", [0.5, 0], r"samples.temperatures must be > 0"),
                                       ("train", "batch_size", 100000, "corpus too small")]:
        cfg = tiny_config(demo_corpus, tmp_path / "x")
        setattr(getattr(cfg, section), key, value)
        with pytest.raises(LyricdistError, match=words):
            Trainer(cfg)
    assert not (tmp_path / "x" / "checkpoints").exists()
    with pytest.raises(LyricdistError, match="not found"):
        Trainer(tiny_config(tmp_path / "missing", tmp_path / "y"))


def test_resume_refuses_a_different_vocabulary(tmp_path):
    from lyricdist.prepare import prepare

    corpus = tmp_path / "corpus"
    prepare(["demo"], str(corpus), quiet=True)
    train(tiny_config(corpus, tmp_path / "run", "--train.max_steps=5", "--samples.enabled=false"))
    prepare(["demo"], str(corpus), lowercase=False, overwrite=True, quiet=True)  # same path, capitals kept
    with pytest.raises(LyricdistError, match="vocabulary differs"):
        Trainer(tiny_config(corpus, tmp_path / "run", "--train.max_steps=10", "--samples.enabled=false"), resume=True)


def test_readers_never_modify_a_checkpoint_being_swapped(tmp_path):
    """Between the two renames of a swap, a reader finds the previous version and leaves everything in place."""
    from lyricdist.fileio import readable_dir

    old = tmp_path / "checkpoints" / ".last.old-1234"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    tmp = tmp_path / "checkpoints" / ".last.tmp-xyz"
    tmp.mkdir()
    assert readable_dir(tmp_path / "checkpoints" / "last") == old
    assert old.exists() and tmp.exists() and not (tmp_path / "checkpoints" / "last").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_saves_state_and_resume_matches(demo_corpus, tmp_path, sig, reference_run):
    """Preemption (SIGTERM) or SLURM's time-limit warning (SIGUSR1): state is saved at once, nothing is lost."""
    out = tmp_path / "run"
    proc = _train_proc(demo_corpus, out, "--train.save_every=1000")  # no periodic saves: only the signal's
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be signalled"
        time.sleep(0.01)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig, proc.stderr.read()[-2000:]
    stopped_at = _state_step(out)
    assert 30 <= stopped_at < 400
    resumed = _train_proc(demo_corpus, out, "--train.save_every=1000", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    a = load_file(str(reference_run / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_small_corpus_warns_and_the_summary_counts_the_untrained_tail(demo_corpus, tmp_path, capsys):
    """Truncated BPTT over B streams: when B x T nears the corpus, one line says what an epoch skips and warns."""
    Trainer(tiny_config(demo_corpus, tmp_path / "ok", "--samples.enabled=false"))
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("batches:")][0]
    assert "never trained" in line and "warning" not in line
    n_chars = json.loads((demo_corpus / "meta.json").read_text())["splits"]["train"]["chars"]
    big = n_chars // (16 * 2)  # about two chunks of 16 characters per stream
    Trainer(tiny_config(demo_corpus, tmp_path / "small", f"--train.batch_size={big}", "--samples.enabled=false"))
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("batches:")][0]
    assert "warning: an epoch is" in line and "state resets every" in line and "lower train.batch_size" in line


def test_cpu_resume_is_bitwise_with_dropout_and_grad_accum(demo_corpus, tmp_path, capsys):
    """The CPU promise holds with inter-layer dropout and micro-batches: stop at 4, resume to 8 == 8 straight."""
    args = ["--model.num_layers=2", "--model.dropout=0.3", "--train.grad_accum=2", "--train.save_every=4",
            "--train.eval_every=4", "--train.log_every=2", "--samples.enabled=false"]
    train(tiny_config(demo_corpus, tmp_path / "straight", *args, "--train.max_steps=8"))
    train(tiny_config(demo_corpus, tmp_path / "split", *args, "--train.max_steps=4"))
    train(tiny_config(demo_corpus, tmp_path / "split", *args, "--train.max_steps=8"), resume=True)
    assert "exact on CPU (bitwise" in capsys.readouterr().out  # the resume line states what is exact where
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume with dropout and grad_accum"
    assert _losses(tmp_path / "straight")[2:] == _losses(tmp_path / "split")[2:]


def test_progress_samples_of_a_conditioned_model_write_as_each_artist(demo_corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(demo_corpus, out, "--model.artist_embedding_dim=4", "--train.max_steps=10",
                      "--samples.enabled=true", "--samples.length=10"))
    rows = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    artists = json.loads((demo_corpus / "meta.json").read_text())["artists"]
    assert {r["artist"] for r in rows} == set(artists)
    for step in {r["step"] for r in rows}:
        assert sorted(r["artist"] for r in rows if r["step"] == step) == sorted(artists * 2)  # x 2 temperatures


@pytest.mark.slow
def test_two_processes_agree_on_a_stop_between_log_steps(demo_corpus, tmp_path):
    """torchrun forwards SIGTERM and SIGKILLs 30 s later: with log steps far apart, the processes still agree on
    the stop within train.stop_check_seconds and save their state before the grace runs out."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lyricdist",
         "train", "--config", str(CONFIGS / "tiny.yaml"), f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
         "--train.max_steps=100000", "--train.log_every=50000", "--train.eval_every=100000",
         "--train.save_every=20", "--train.stop_check_seconds=0.05", "--samples.enabled=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 120
    while _state_step(out) < 20:
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be signalled"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert "SIGTERM: saving resumable state at step" in output, output[-3000:]
    stopped_at = int(output.split("saving resumable state at step ")[1].split(";")[0])
    assert 20 <= stopped_at < 50000 and _state_step(out) == stopped_at


# ---- the loop's decisions: evaluation without a validation split, `last`, the throughput window --------------
@pytest.fixture(scope="module")
def corpus_without_val(tmp_path_factory) -> Path:
    from lyricdist.prepare import prepare

    out = tmp_path_factory.mktemp("noval") / "demo"
    prepare(["demo"], str(out), val_fraction=0.0, quiet=True)
    return out


def test_without_a_validation_split_every_evaluation_saves_last_and_logs_no_empty_rows(corpus_without_val, tmp_path):
    """Eval steps that are log steps and eval steps that are not behave alike: samples and `last` at each, no
    `best`, and no metrics row made only of Nones. A resumed run refreshes `last` too."""
    out = tmp_path / "run"
    args = ["--train.log_every=4", "--train.eval_every=3", "--samples.enabled=true", "--samples.length=5"]
    train(tiny_config(corpus_without_val, out, *args, "--train.max_steps=12"))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert all(r["train_loss"] is not None for r in rows)
    assert sorted({json.loads(l)["step"] for l in (out / "samples.jsonl").read_text().splitlines()}) == [3, 6, 9, 12]
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["step"] == 12
    assert not (out / "checkpoints" / "best").exists()
    train(tiny_config(corpus_without_val, out, *args, "--train.max_steps=15"), resume=True)
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["step"] == 15


def test_chars_per_sec_counts_training_time_only(demo_corpus, tmp_path):
    """With a fake clock, each training step takes 1 s and each evaluation/save 100 s: every log row's rate is the
    window's characters over its training seconds alone."""
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", "--train.log_every=4", "--train.eval_every=2",
                                  "--train.max_steps=12", "--samples.enabled=false"))
    now = [0.0]
    trainer.loop.clock = lambda: now[0]
    step, checkpoint, save_state = trainer.train_step, trainer.loop._checkpoint, trainer.loop.save
    chars: list[int] = []

    def timed(seconds, fn, record=False):
        def wrapper(*a, **k):
            out = fn(*a, **k)
            now[0] += seconds
            if record:
                chars.append(out.items)
            return out
        return wrapper

    trainer.train_step = timed(1.0, step, record=True)
    trainer.loop._checkpoint = timed(100.0, checkpoint)
    trainer.loop.save = timed(100.0, save_state)
    trainer.fit()
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    for r in rows:
        if r["train_loss"] is None:
            continue  # an evaluation-only row
        window = chars[r["step"] - 4 : r["step"]]
        assert r["chars_per_sec"] == pytest.approx(sum(window) / 4.0)
