"""Run plumbing both trainers share: the accelerator, the run directory and its resume decision, stopping on a
signal, and the throughput window. The trainers keep only what is their own (model, data, step, evaluation)."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import yaml

from .errors import LyricdistError
from .fileio import atomic_write_text, recover_dir
from .tracking import wandb_enabled

STATE_DIR = "state"
STATE_INFO = "trainer_state.json"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)  # preemption/scancel/torchrun, SLURM limit, ^C


def make_accelerator(cfg, **kwargs):
    """Accelerate for devices, processes and tracking. Precision is lyricdist.precision's, never accelerate's
    (its autocast would take the RNN out of its fused kernel and convert the full logits to fp32)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    acc = Accelerator(
        cpu=cfg.train.cpu,
        mixed_precision="no",
        log_with="wandb" if wandb_enabled(cfg) else None,
        project_config=ProjectConfiguration(project_dir=cfg.train.out_dir),
        **kwargs,
    )
    if acc.gradient_accumulation_steps > 1:  # `accelerate launch --gradient_accumulation_steps N`: not our loop's
        acc.print(f"warning: accelerate's gradient_accumulation_steps={acc.gradient_accumulation_steps} is ignored: "
                  f"lyricdist accumulates with train.grad_accum (pass --train.grad_accum "
                  f"{acc.gradient_accumulation_steps} to `lyricdist train` instead)")
    return acc


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


def open_run_dir(acc, out: Path, config: dict, resume: bool, checked: tuple[str, ...]) -> Path | None:
    """Prepare OUT_DIR for a run: finish an interrupted state swap, refuse to start over a run in progress unless
    resuming, check a resumed run's config, write config.yaml. Returns the state directory to resume from, or None."""
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

    def __init__(self, acc, agree_every: int, agree_seconds: float):
        self.acc = acc
        self.agree_every = max(1, agree_every)
        self.agree_seconds = agree_seconds
        self.signum: int | None = None
        self._previous: dict = {}

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
