"""Nothing silently wrong at scale: a diverging run stops saying why and publishes nothing non-finite; processes a
launcher started are one data-parallel job (or none), never copies; one writer per run directory; a full disk and
a killed DDP worker leave a run that resumes."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIGS, run_main, tiny_config
from lyricdist.checkpoint import load_checkpoint
from lyricdist.divergence import SCALE_FLOOR, DivergenceGuard
from lyricdist.errors import RunDirLocked, TrainingDiverged
from lyricdist.train import Trainer, train
from test_train import DIST_ARGS, GOLDEN, _state_step, read_metrics

TINY = str(CONFIGS / "tiny.yaml")


def _train_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", TINY, f"--data.corpus={corpus}", f"--train.out_dir={out}", "--samples.enabled=false",
            *extra]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _error_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if "error:" in l]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0][lines[0].index("lyricdist"):]  # after any progress bar drawn on the same line


# ---- 1. divergence -----------------------------------------------------------------------------------------------
SGD = ["--train.optimizer=sgd", "--train.grad_clip=0", "--train.log_every=5", "--train.eval_every=5"]


def test_a_diverging_run_stops_with_one_line_and_leaves_the_last_good_state_to_resume(demo_corpus, tmp_path):
    """SGD at an absurd rate, no clipping: exit 3 at once with the step, the value and what to change; the state and
    checkpoints of step 10 stay byte for byte; --resume with a sane rate continues from them at that rate."""
    out = tmp_path / "run"
    assert run_main(*_train_args(demo_corpus, out, *SGD, "--train.lr=0.5", "--train.max_steps=10")).returncode == 0
    before = {name: _files(out / name) for name in ("state", "checkpoints")}

    bad = run_main(*_train_args(demo_corpus, out, *SGD, "--train.lr=1e38", "--train.max_steps=40", "--resume"))
    assert bad.returncode == 3, bad.stderr[-3000:]
    line = _error_line(bad.stderr)
    step = int(re.search(r"training diverged at step (\d+): the training loss is (inf|nan)\b", line).group(1))
    assert 10 < step <= 15, line  # at the first non-finite loss, read at the next log step
    assert "lower train.lr (now 1e+38)" in line and "train.grad_clip" in line, line
    assert f"the last good state (step 10) is kept in {out / 'state'}" in line and "--resume" in line, line
    assert {name: _files(out / name) for name in ("state", "checkpoints")} == before  # nothing published
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    model, _, info = load_checkpoint(out / "checkpoints" / "last")
    assert info["step"] == 10 and all(torch.isfinite(p).all() for p in model.parameters())

    good = run_main(*_train_args(demo_corpus, out, *SGD, "--train.lr=0.25", "--train.max_steps=20", "--resume"))
    assert good.returncode == 0, good.stderr[-3000:]
    assert "train.lr is now 0.25 (the state was saved with 0.5)" in good.stdout
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]  # the diverged attempt's rows are gone
    assert [r["lr"] for r in rows] == [0.5, 0.5, 0.25, 0.25] and all(math.isfinite(r["train_loss"]) for r in rows)


def test_adams_float_overflow_is_the_same_clear_stop(demo_corpus, tmp_path):
    """Adam's step size lr / (1 - beta1) no longer fits a float32: the optimizer raised a RuntimeError naming
    neither step nor cause; now it is a divergence at step 1 like any other."""
    out = tmp_path / "run"
    proc = run_main(*_train_args(demo_corpus, out, "--train.optimizer=adam", "--train.lr=1e38"))
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = _error_line(proc.stderr)
    assert "training diverged at step 1: the optimizer's update overflowed float32" in line, line
    assert "lower train.lr" in line and "no state was saved yet" in line and "start again" in line, line
    assert not (out / "state").exists() and not (out / "checkpoints").exists()


def test_a_save_between_log_steps_checks_first(demo_corpus, tmp_path):
    """A save that is not at a log step (save_every 3, log_every 10) reads the device-side record first: the loss
    went non-finite at step 2, so the save of step 3 is refused and nothing is written."""
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", *SGD, "--train.lr=1e38", "--train.log_every=10",
                                  "--train.save_every=3", "--train.eval_every=10", "--train.max_steps=10",
                                  "--samples.enabled=false"))
    with pytest.raises(TrainingDiverged, match="at step 2: the training loss is"):
        trainer.fit()
    assert trainer.step == 3 and not (tmp_path / "run" / "state").exists()


def test_weights_that_overflowed_are_never_saved(demo_corpus, tmp_path):
    """An update can make a weight inf while the loss it came from was finite: a save checks the weights too."""
    trainer = Trainer(tiny_config(demo_corpus, tmp_path / "run", "--samples.enabled=false"))
    trainer.train_step()
    with torch.no_grad():
        trainer.optim_params[0].view(-1)[0] = math.inf
    with pytest.raises(TrainingDiverged, match="at step 1: the weights are no longer finite"):
        trainer.loop.save()
    assert not (tmp_path / "run" / "state").exists()


def _guard(scaler=None, tmp_path=Path(".")):
    printed: list[str] = []
    acc = types.SimpleNamespace(device=torch.device("cpu"), num_processes=1, print=printed.append)
    return DivergenceGuard(acc, tmp_path, [torch.zeros(3)], "lower train.lr (now 9)", scaler), printed


def test_fp16_overflows_are_skipped_but_a_collapsing_loss_scale_is_reported(tmp_path):
    """With a real GradScaler: overflowing gradients are its to skip (no divergence, though the gradient norm is
    inf), a scale fallen below 1 is reported once, and one fallen below 2^-24 (no step can succeed) stops."""
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    scaler.scale(torch.ones(()))  # the scale tensor exists from the first step on
    guard, printed = _guard(scaler, tmp_path)

    def overflowing_step(step: int) -> None:
        param.grad = torch.full_like(param, math.inf)
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        guard.observe(step, torch.tensor(2.5), grad_norm=torch.tensor(math.inf))

    for step in range(1, 4):
        overflowing_step(step)
    guard.check(3)  # 2^1: skipped steps, not divergence
    assert printed == [] and scaler.get_scale() == 2.0
    for step in range(4, 8):
        overflowing_step(step)
    guard.check(7)
    assert len(printed) == 1 and "fp16 loss scale fell to 0.125 at step 7" in printed[0], printed
    assert "4 of the last 4 steps overflowed and were skipped" in printed[0] and "bf16" in printed[0]
    for step in range(8, 30):
        overflowing_step(step)
        if step % 5 == 0:
            guard.check(step)
    assert len(printed) == 1  # reported once while it stays low
    with pytest.raises(TrainingDiverged, match="fp16 loss scale collapsed to .*no step can succeed"):
        guard.check(29)
    assert scaler.get_scale() < SCALE_FLOOR

    fp32, _ = _guard(None, tmp_path)  # the same inf gradient norm without loss scaling is divergence
    fp32.observe(1, torch.tensor(2.5), torch.tensor(math.inf))
    with pytest.raises(TrainingDiverged, match="at step 1: the gradient norm is inf"):
        fp32.check(1)


def test_the_similarity_trainer_stops_the_same_way(tmp_path):
    """Both similarity models: a NaN loss (the n-gram model, whose binary cross-entropy rejected NaN inputs with a
    RuntimeError) and Adam's overflow (MaLSTM) are divergences; nothing is saved."""
    from lyricdist.similarity import load_config
    from lyricdist.similarity.train import train as similarity_train

    for name, lr in (("similarity-ngram.yaml", "1e30"), ("similarity-tiny.yaml", "1e38")):
        out = tmp_path / name
        cfg = load_config(CONFIGS / name, ["--train.epochs=1", "--train.grad_clip=0", f"--train.lr={lr}",
                                           f"--train.out_dir={out}", "--train.log_every=2"])
        with pytest.raises(TrainingDiverged, match="training diverged at step"):
            similarity_train(cfg)
        assert not (out / "state").exists() and not (out / "checkpoints").exists()


# ---- 2. processes a launcher started are one job -----------------------------------------------------------------
def _torchrun(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lyricdist",
         *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.mark.slow
def test_torchrun_without_a_gpu_and_without_train_cpu_is_one_data_parallel_run(demo_corpus, tmp_path):
    """`torchrun --nproc_per_node 2` on a machine without GPUs, train.cpu false: one gloo job (one state with both
    processes' shares, rank 0 alone logs and writes), whose losses are the golden ones; not two copies."""
    out = tmp_path / "run"
    proc = _torchrun("train", "--config", TINY, f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
                     "--train.cpu=false", *DIST_ARGS, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("the 2 launched processes train data-parallel on the CPU (gloo)") == 1, proc.stdout
    state = json.loads((out / "state" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["step"] == 12
    assert sorted(p.name for p in (out / "state").glob("hidden_*")) == ["hidden_0.safetensors", "hidden_1.safetensors"]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 13))  # once each: rank 0 alone logs
    golden = json.loads(GOLDEN.read_text())
    assert golden["args"] == DIST_ARGS
    assert [r["train_loss"] for r in rows] == pytest.approx(golden["train_loss"], abs=1e-4)


def test_processes_accelerate_does_not_join_are_refused(demo_corpus, tmp_path):
    """A launch accelerate sees as no distributed job although the launcher says WORLD_SIZE 2 (e.g. `mpirun` on a
    GPU machine, which accelerate does not join without cpu=True): one line saying how, exit 1, nothing written.
    No GPU here, so the stack is told it has one: that is the case where accelerate forms no group."""
    out = tmp_path / "run"
    code = ("import sys, lyricdist.run as run; run._device_group_possible = lambda: True; "
            "from lyricdist.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, *_train_args(demo_corpus, out, "--train.cpu=false")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WORLD_SIZE": "2", "RANK": "0"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _error_line(proc.stderr)
    assert "the launcher started 2 processes, but accelerate did not join them into one job" in line, line
    assert "--train.cpu true" in line and "copies" in line, line
    assert not out.exists()


# ---- 3. one writer per run directory -----------------------------------------------------------------------------
HOLDER = r"""
import sys, time
from pathlib import Path
from lyricdist.run import RunLock
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
assert RunLock(Path(sys.argv[1])).acquire() is None
print("held", flush=True)
time.sleep(600)
"""


def _hold(out: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock, as a running trainer does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_fails_at_once_naming_the_holder_and_readers_take_no_lock(demo_corpus, tmp_path):
    out = tmp_path / "run"
    assert run_main(*_train_args(demo_corpus, out, "--train.max_steps=10")).returncode == 0
    before = _files(out)
    holder = _hold(out)
    try:
        second = run_main(*_train_args(demo_corpus, out, "--train.max_steps=20", "--resume"))
        assert second.returncode == 4, second.stderr[-3000:]
        line = _error_line(second.stderr)
        assert f"is being written by another run (pid {holder.pid} on host {socket.gethostname()}" in line, line
        assert "batches:" not in second.stdout  # refused before the set-up
        assert {k: v for k, v in _files(out).items() if k != "run.lock"} == {
            k: v for k, v in before.items() if k != "run.lock"}
        reader = run_main("sample", str(out), "--primetext", "the", "--length", "20")  # readers take no lock
        assert reader.returncode == 0, reader.stderr[-3000:]
        from lyricdist.similarity import load_config
        from lyricdist.similarity.train import train as similarity_train

        sim = tmp_path / "similarity"
        sim_holder = _hold(sim)
        try:
            with pytest.raises(RunDirLocked, match=f"pid {sim_holder.pid}"):
                similarity_train(load_config(CONFIGS / "similarity-ngram.yaml", [f"--train.out_dir={sim}"]))
        finally:
            sim_holder.kill()
            sim_holder.wait()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crashed holder: the OS releases its lock, nothing to clean up
        holder.wait()
    resumed = run_main(*_train_args(demo_corpus, out, "--train.max_steps=20", "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["step"] == 20


def test_a_file_system_without_locks_warns_and_trains(demo_corpus, tmp_path, monkeypatch, capsys):
    """NFS or Lustre mounted without lock support: flock fails with ENOLCK; the run warns and goes on."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    train(tiny_config(demo_corpus, tmp_path / "run", "--train.max_steps=5", "--samples.enabled=false"))
    err = capsys.readouterr().err
    assert f"warning: cannot lock {tmp_path / 'run'} (No locks available" in err and "no other run" in err
    assert json.loads((tmp_path / "run" / "state" / "trainer_state.json").read_text())["step"] == 5


@pytest.mark.slow
def test_every_rank_of_a_second_multi_process_writer_exits(demo_corpus, tmp_path):
    """torchrun with 2 ranks on a locked run: rank 0 finds the lock held and every rank exits with the line
    (rank 1 learns it from rank 0), nothing is written and nothing hangs."""
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        proc = _torchrun("train", "--config", TINY, f"--data.corpus={demo_corpus}", f"--train.out_dir={out}",
                         "--samples.enabled=false", timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert f"is being written by another run (pid {holder.pid}" in proc.stderr, proc.stderr[-3000:]
    assert "exitcode  : 4" in proc.stderr, proc.stderr[-3000:]  # torchrun's summary of the failed rank
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]


# ---- 4. what already holds: a full disk, a killed DDP worker -------------------------------------------------------
def _full_disk(monkeypatch, out: Path, where: str) -> None:
    """From the first resumable state on, every safetensors file written by `where` (the checkpoint or the state
    save) fails as on a full disk: the file is begun, then the write fails with ENOSPC (safetensors' own error)."""
    import accelerate.utils.other
    import safetensors.torch
    from safetensors import SafetensorError

    import lyricdist.checkpoint
    import lyricdist.state

    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        if not (out / "state" / "trainer_state.json").exists():
            return real(tensors, filename, metadata)
        Path(filename).write_bytes(b"\0" * 8)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    targets = {"checkpoint": [(lyricdist.checkpoint, "save_file")],
               "state": [(lyricdist.state, "save_file"), (accelerate.utils.other, "safe_save_file")]}[where]
    for module, name in targets:
        monkeypatch.setattr(module, name, save_file)


@pytest.mark.parametrize("where", ["checkpoint", "state"])
def test_a_disk_that_fills_up_during_a_save_stops_cleanly_and_keeps_the_previous_save(
        demo_corpus, tmp_path, monkeypatch, where):
    out = tmp_path / "run"
    args = _train_args(demo_corpus, out, "--train.max_steps=10", "--train.eval_every=5")
    with monkeypatch.context() as patch:
        _full_disk(patch, out, where)
        proc = run_main(*args)
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "no space left on device" in line and "free some space" in line and "--resume" in line, line
    model, _, info = load_checkpoint(out / "checkpoints" / "last")  # the previous checkpoint, complete
    assert info["step"] == (5 if where == "checkpoint" else 10)
    assert _state_step(out) == 5
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or ".old-" in p.name], "partial saves left behind"
    resumed = run_main(*args, "--resume")  # space freed: the run continues from its last state
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = tmp_path / "straight"
    assert run_main(*_train_args(demo_corpus, straight, "--train.max_steps=10", "--train.eval_every=5")).returncode == 0
    a, b = (load_file(str(d / "checkpoints" / "last" / "model.safetensors")) for d in (straight, out))
    assert all(torch.equal(a[k], b[k]) for k in a)


KILL_ARGS = ["--model.num_layers=2", "--model.hidden_size=48", "--model.dropout=0.2", "--train.max_steps=300",
             "--train.eval_every=100", "--train.save_every=20", "--train.log_every=10", "--samples.enabled=false",
             "--train.batch_size=8"]


def _ddp_train(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lyricdist",
         "train", "--config", TINY, f"--data.corpus={corpus}", f"--train.out_dir={out}", *KILL_ARGS, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
    )


def _worker(launcher: subprocess.Popen, rank: int, timeout: float = 60):
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} worker under torchrun")


@pytest.fixture
def ddp_jobs():
    """Starts 2-process torchrun trainings; whatever is still running at the end is killed (its whole session)."""
    jobs: list[subprocess.Popen] = []

    def start(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
        jobs.append(_ddp_train(corpus, out, *extra))
        return jobs[-1]

    yield start
    for job in jobs:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


@pytest.mark.slow
def test_a_killed_ddp_worker_resumes_bitwise(demo_corpus, tmp_path, ddp_jobs):
    """SIGKILL one of two torchrun workers after the first state save; torchrun ends the job; `--resume` with two
    processes ends with bitwise the weights (and losses) of an uninterrupted 2-process run."""
    reference = tmp_path / "reference"
    ref = ddp_jobs(demo_corpus, reference)
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-3000:]

    out = tmp_path / "killed"
    job = ddp_jobs(demo_corpus, out)
    worker = _worker(job, rank=1)
    deadline = time.time() + 240
    while _state_step(out) < 20 and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    assert job.wait(timeout=120) != 0, "the job finished before its worker could be killed"
    killed_at = _state_step(out)
    assert 20 <= killed_at < 300

    resumed = ddp_jobs(demo_corpus, out, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    assert json.loads((out / "state" / "trainer_state.json").read_text())["num_processes"] == 2
    a = load_file(str(reference / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after a worker was killed at step {killed_at} and resumed"
    assert [r["train_loss"] for r in read_metrics(out)] == [r["train_loss"] for r in read_metrics(reference)]
