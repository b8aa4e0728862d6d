"""Run plumbing both trainers share: the accelerator, the run directory (its one writer and its resume decision),
stopping on a signal, and the throughput window. The trainers keep only what is their own (model, data, step,
evaluation)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import yaml

from .errors import LyricdistError, RunDirLocked
from .fileio import atomic_write_text, recover_dir
from .state import STATE_DIR, STATE_INFO
from .tracking import wandb_enabled

LOCK_FILE = "run.lock"  # OUT_DIR/run.lock: held (flock) by the run writing OUT_DIR; names its host and pid
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)  # preemption/scancel/torchrun, SLURM limit, ^C


def launched_processes() -> int:
    """How many processes the launcher says the job has: torchrun's and accelerate's WORLD_SIZE, or MPI's."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)


def _device_group_possible() -> bool:
    """Whether accelerate joins launched processes on an accelerator here (one with a distributed backend: NCCL
    on GPUs, ...). Without one it joins them only when told cpu=True: otherwise every process runs alone."""
    try:
        from accelerate.utils.imports import get_distributed_backend, get_torch_accelerator_backend
    except ImportError:  # an accelerate without these helpers knows CUDA
        return torch.cuda.is_available()
    device_type, _ = get_torch_accelerator_backend()
    return get_distributed_backend(device_type) is not None


def make_accelerator(cfg, **kwargs):
    """Accelerate for devices, processes and tracking. Precision is lyricdist.precision's, never accelerate's
    (its autocast would take the RNN out of its fused kernel and convert the full logits to fp32).

    Processes a launcher started are one data-parallel job or nothing: with no GPU (or other accelerator) here
    they train on the CPU with gloo, as `train.cpu: true` would; any other launch accelerate does not join (e.g.
    `mpirun` on a GPU machine) is refused, never run as independent copies writing one run directory."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    world = launched_processes()
    to_cpu = world > 1 and not cfg.train.cpu and not _device_group_possible()
    acc = Accelerator(
        cpu=cfg.train.cpu or to_cpu,
        mixed_precision="no",
        log_with="wandb" if wandb_enabled(cfg) else None,
        project_config=ProjectConfiguration(project_dir=cfg.train.out_dir),
        **kwargs,
    )
    if world > 1 and acc.num_processes != world:
        raise LyricdistError(
            f"the launcher started {world} processes, but accelerate did not join them into one job "
            f"({acc.distributed_type.value}, {acc.num_processes} process each): they would train {world} copies "
            f"of the run; launch with torchrun or accelerate launch (one process per GPU), or pass "
            f"--train.cpu true to train data-parallel on the CPU"
        )
    if to_cpu:
        acc.print(f"no GPU here: the {world} launched processes train data-parallel on the CPU (gloo)")
    if acc.gradient_accumulation_steps > 1:  # `accelerate launch --gradient_accumulation_steps N`: not our loop's
        acc.print(f"warning: accelerate's gradient_accumulation_steps={acc.gradient_accumulation_steps} is ignored: "
                  f"lyricdist accumulates with train.grad_accum (pass --train.grad_accum "
                  f"{acc.gradient_accumulation_steps} to `lyricdist train` instead)")
    return acc


def use_config_hyperparameters(acc, optimizer, lr: float, weight_decay: float, scheduler=None,
                               current_lr: float | None = None) -> None:
    """After loading a resumable state, train with the config's learning rate and weight decay, not the ones the
    loaded optimizer state brings back (a resume after a divergence lowers train.lr). `current_lr` is the rate
    the schedule gives the next step (default `lr`)."""
    groups = getattr(optimizer, "optimizer", optimizer).param_groups
    before = groups[0].get("initial_lr", groups[0]["lr"]) if groups else lr
    for g in groups:
        g["initial_lr"], g["lr"] = lr, lr if current_lr is None else current_lr
        if "weight_decay" in g:
            g["weight_decay"] = weight_decay
    if scheduler is not None:
        inner = getattr(scheduler, "scheduler", scheduler)
        inner.base_lrs = [lr] * len(groups)
        inner._last_lr = [g["lr"] for g in groups]
    if before != lr:
        acc.print(f"train.lr is now {lr:g} (the state was saved with {before:g})")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_resume_config(saved: dict, now: dict, checked: tuple[str, ...], out_dir: Path) -> None:
    """Refuse to resume when a key the saved state depends on (a prefix in `checked`) has changed."""
    before, after = _flatten(saved), _flatten(now)
    for key in after:
        if key.startswith(checked) and key in before and before[key] != after[key]:
            raise LyricdistError(
                f"cannot resume: {key} was {before[key]!r} and is now {after[key]!r}; "
                f"use the run's config ({out_dir}/config.yaml) or a new train.out_dir"
            )


_HELD: dict[str, "RunLock"] = {}  # the run directories this process writes, by resolved path


class RunLock:
    """An exclusive lock on OUT_DIR/run.lock (flock), held while a run writes OUT_DIR. The OS releases it when
    the process ends, however it ends, so a crash never leaves a stale lock behind; the file itself stays."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns None, or (held elsewhere) a line naming the holder. Where the file system has no
        locks (some NFS or Lustre mounts) it warns and goes on unlocked."""
        try:
            import fcntl
        except ImportError:  # not a POSIX system
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return self._holder()
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                print(f"warning: cannot lock {self.path.parent} ({os.strerror(e.errno)}: a file system without "
                      f"locks?); make sure no other run writes it", file=sys.stderr)
                return None
            raise
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self.fd = fd
        return None

    def _holder(self) -> str:
        """Who holds the lock, as the holder wrote it (it writes just after taking the lock: wait a moment)."""
        info = {}
        for _ in range(20):
            try:
                info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                info = {}
            if info.get("pid"):
                break
            time.sleep(0.05)
        who = (f"pid {info['pid']} on host {info.get('host', '?')}, since {info.get('since', '?')}" if info.get("pid")
               else "a process that is starting")
        return (f"{self.path.parent} is being written by another run ({who}); wait for it to end or stop it, "
                f"or choose another train.out_dir")

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # no stale holder for the next writer's refusals to name
            os.close(self.fd)
            self.fd = None


def lock_run_dir(acc, out: Path, create: bool = True) -> None:
    """Make this run OUT_DIR's one writer: the main process takes OUT_DIR/run.lock (again, if this process holds
    it already) and every process learns the outcome; RunDirLocked on all of them if another run holds it.
    create=False: only if OUT_DIR exists (a trainer asks this first, to fail before its set-up when a run is
    writing OUT_DIR, without creating anything if its set-up then fails)."""
    refusal = None
    if acc.is_main_process and (create or out.is_dir()):
        out.mkdir(parents=True, exist_ok=True)
        key = str(out.resolve())
        if key not in _HELD:
            lock = RunLock(out)
            refusal = lock.acquire()
            if refusal is None:
                _HELD[key] = lock
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        refusal = broadcast_object_list([refusal], from_process=0)[0]
    if refusal:
        raise RunDirLocked(refusal)


def close_run_dir(out: Path) -> None:
    """Release OUT_DIR's lock at the end of a run (a no-op where this process holds none)."""
    lock = _HELD.pop(str(Path(out).resolve()), None)
    if lock is not None:
        lock.release()


def open_run_dir(acc, out: Path, config: dict, resume: bool, checked: tuple[str, ...]) -> Path | None:
    """Prepare OUT_DIR for a run: lock it (one writer; `close_run_dir` releases it), finish an interrupted state
    swap, refuse to start over a run in progress unless resuming, check a resumed run's config, write config.yaml.
    Returns the state directory to resume from, or None."""
    lock_run_dir(acc, out)
    try:
        return _prepare_run_dir(acc, out, config, resume, checked)
    except BaseException:
        close_run_dir(out)
        raise


def _prepare_run_dir(acc, out: Path, config: dict, resume: bool, checked: tuple[str, ...]) -> Path | None:
    state_dir = out / STATE_DIR
    if acc.is_main_process:
        recover_dir(state_dir)
    acc.wait_for_everyone()
    has_state = (state_dir / STATE_INFO).is_file()
    if has_state and not resume:
        raise LyricdistError(
            f"{out} holds a run in progress; pass --resume to continue it, or choose another train.out_dir"
        )
    if resume and has_state:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
        check_resume_config(saved, config, checked, out)
    elif resume:
        acc.print(f"no resumable state in {state_dir}: starting a new run")
    acc.wait_for_everyone()  # every process has read the old config before it is replaced
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return state_dir if resume and has_state else None


class TrainingStopped(Exception):
    """Training stopped on a signal after saving its resumable state."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class StopOnSignal:
    """Within the block, SIGTERM, SIGUSR1 and ^C ask the loop to stop at the next step boundary (a second ^C stops
    at once). With several processes, `requested` agrees across them with one all-reduce every `agree_every` steps
    (see `calibrate`) and whenever asked with now=True; a single process just reads its flag."""

    CALIBRATION_STEPS = 5  # steps timed to space the agreements of several processes

    def __init__(self, acc, agree_every: int, agree_seconds: float, clock=time.perf_counter):
        self.acc = acc
        self.agree_every = max(1, agree_every)
        self.agree_seconds = agree_seconds
        self.signum: int | None = None
        self._previous: dict = {}
        self._clock, self._timing = clock, None  # (first step, its time) until calibrated

    def step_done(self, step: int) -> None:
        """Called after every step: CALIBRATION_STEPS steps after the first it sees, `calibrate` from their time."""
        if self._timing is None:
            self._timing = (step, self._clock())
        elif self._timing[0] is not None and step == self._timing[0] + self.CALIBRATION_STEPS:
            self.calibrate((self._clock() - self._timing[1]) / self.CALIBRATION_STEPS)
            self._timing = (None, 0.0)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def calibrate(self, seconds_per_step: float) -> None:
        """Agree every k steps, k the same on every process (from the mean step time), so that at most
        `agree_seconds` of training pass between agreements."""
        if self.acc.num_processes == 1:
            return
        mean = self.acc.reduce(torch.tensor(seconds_per_step, device=self.acc.device), "mean").item()
        self.agree_every = max(1, min(self.agree_every, int(self.agree_seconds / max(mean, 1e-9))))

    def requested(self, step: int, now: bool = False) -> bool:
        if self.acc.num_processes == 1:
            return self.signum is not None
        if not now and step % self.agree_every:
            return False
        flag = torch.tensor(float(self.signum is not None), device=self.acc.device)
        return self.acc.reduce(flag, "sum").item() > 0

    def stop(self, step: int, save) -> None:
        """Save (unless `save` is None: the state of this step is already saved) and raise TrainingStopped."""
        signum = self.signum or signal.SIGTERM
        self.acc.print(f"\n{signal.Signals(signum).name}: saving resumable state at step {step}; continue with --resume")
        if save is not None:
            save()
        raise TrainingStopped(signum)


class ThroughputWindow:
    """Items (characters, pairs) per second of training between two reads. Time spent inside `paused()`
    (evaluation, samples, checkpoints) is not training and is left out. `clock` is injectable for tests."""

    def __init__(self, device: torch.device, clock=time.perf_counter):
        self.device, self.clock = device, clock
        self.reset()

    def reset(self) -> None:
        self.items, self.paused_seconds, self.start = 0, 0.0, self.clock()

    def add(self, items: int) -> None:
        self.items += items

    def rate(self) -> float:
        return self.items / max(self.clock() - self.start - self.paused_seconds, 1e-9)

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self.device.type == "cuda":  # queued training kernels belong to training, not to the pause
            torch.cuda.synchronize(self.device)
        began = self.clock()
        try:
            yield
        finally:
            self.paused_seconds += self.clock() - began
