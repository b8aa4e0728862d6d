"""The one training loop, for every model lyricdist trains (the char-RNN, the MaLSTM and the n-gram siamese model).

A model comes as an *arm* (`Arm`): it knows its data, one optimizer step, its evaluation, its checkpoint and what of
its state a resume needs. The loop owns what all runs share and reads top to bottom: the run directory (one writer,
refuse to start over a run in progress, check a resumed run's config), resuming, the step schedule (log, evaluate,
save: decided once per step), the divergence guard, stop-on-signal, the throughput window, the progress bar, the
tracker, the best/last checkpoints and the resumable state. Only the main process logs and writes checkpoints;
every process writes its share of the state.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .checkpoint import BestAndLast
from .divergence import DivergenceGuard, fix_hint
from .run import StopOnSignal, ThroughputWindow, open_run_dir
from .state import EXACTNESS, SavedState, load_state, save_state
from .tracking import Tracker


@dataclass(frozen=True)
class Schedule:
    """When the loop logs, evaluates and saves, in optimizer steps (the last step does all three)."""

    max_steps: int
    log_every: int
    eval_every: int
    save_every: int
    stop_check_seconds: float = 5.0  # with several processes, at most this much training between stop agreements


@dataclass
class StepResult:
    loss_sum: torch.Tensor  # this process's summed loss over its items (on the device: reading it would sync)
    items: int  # items (characters, pairs) the step scored over all processes: a host int
    grad_norm: torch.Tensor | float | None = None


@dataclass
class Evaluation:
    metrics: dict  # logged at the step
    rank: float | None = None  # lower is better; ranks the `best` checkpoint (None: nothing to rank by)
    summary: dict | None = None  # what the run returns when this evaluation is its best (default: the logged row)
    samples: list[dict] = field(default_factory=list)  # rows of the tracker's samples table (main process)
    message: str = ""  # a line to print


@dataclass
class ArmState:
    info: dict  # JSON: the arm's counters and checks
    per_process: dict[str, torch.Tensor]  # this process's tensors (e.g. carried hidden states)
    full_precision: dict[str, torch.Tensor]  # the main process's fp32 weights of modules trained in 16 bits


class Arm(Protocol):
    """What a model brings to the loop. `step` is the optimizer steps taken: the next batch follows from it."""

    acc: Any
    step: int
    rate_key: str  # the throughput's name in the log, e.g. "chars_per_sec"

    def check_resumable(self, info: dict) -> None: ...  # raise LyricdistError before a state that cannot fit is loaded
    def restore(self, saved: SavedState) -> None: ...  # sets `step` and the arm's own state
    def ready(self) -> None: ...  # after set-up and any resume, before step 1
    def guarded(self) -> tuple[list[torch.Tensor], torch.amp.GradScaler | None, bool]: ...  # weights saved, scaler, check grad norms?
    def train_step(self) -> StepResult: ...
    def log_row(self, last: StepResult) -> dict: ...
    def evaluate(self) -> Evaluation: ...  # collective
    def write_checkpoint(self, path: Path, row: dict) -> None: ...  # main process
    def resumable_state(self) -> ArmState: ...


@dataclass
class RunResult:
    last: dict  # the last logged row
    best: dict | None  # the best evaluation's summary, if any evaluation ranked


class Loop:
    """Set-up around an arm (run directory, resume, tracker, guard), then `fit()`."""

    def __init__(self, arm: Arm, schedule: Schedule, cfg, out: Path, resume: bool, checked_keys: tuple[str, ...],
                 job_type: str = "train"):
        self.arm, self.schedule, self.out = arm, schedule, Path(out)
        acc = self.acc = arm.acc
        self.checkpoints = BestAndLast(self.out)
        self.best_summary: dict | None = None
        self.clock = time.perf_counter  # of the throughput window; a test may give it a fake clock
        run_id = None
        state_dir = open_run_dir(acc, self.out, cfg.to_dict(), resume, checked_keys)
        if state_dir is not None:
            saved = load_state(acc, state_dir, arm.check_resumable)
            arm.restore(saved)
            info = saved.info  # older states: best_val_loss (generator), best_error/best_metrics (similarity)
            best = info.get("best_rank", info.get("best_val_loss", info.get("best_error")))
            self.checkpoints.best = math.inf if best is None else float(best)
            self.best_summary = info.get("best_summary", info.get("best_metrics")) or None
            run_id = info.get("wandb_run_id")
            acc.print(f"resumed from {state_dir} at step {arm.step}: {EXACTNESS[acc.device.type == 'cuda']}")
        self.tracker = Tracker(acc, cfg, self.out, run_id=run_id, resume_step=arm.step, job_type=job_type)
        arm.ready()
        weights, scaler, grad_norm = arm.guarded()
        self.guard = DivergenceGuard(acc, self.out, weights, fix_hint(cfg.train.lr, cfg.train.grad_clip), scaler,
                                     grad_norm=grad_norm)

    def save(self) -> None:
        """The resumable state of this step (collective); never one holding non-finite weights."""
        step = self.arm.step
        self.guard.check(step)
        own = self.arm.resumable_state()
        info = {"step": step, "best_rank": self.checkpoints.best_or_none, "best_summary": self.best_summary,
                "wandb_run_id": self.tracker.run_id, **own.info}
        save_state(self.acc, self.out / "state", info, own.per_process, own.full_precision)

    def fit(self) -> RunResult:
        from tqdm.auto import tqdm

        arm, s, acc = self.arm, self.schedule, self.acc
        bar = tqdm(total=s.max_steps, initial=arm.step, disable=not acc.is_main_process, unit="step",
                   dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)  # short batch-job logs
        window = ThroughputWindow(acc.device, self.clock)
        window_loss = torch.zeros((), device=acc.device)
        last: dict = {}
        with StopOnSignal(acc, s.log_every, s.stop_check_seconds) as stop:
            try:
                while arm.step < s.max_steps:
                    with self.guard.stepping(arm.step + 1):
                        result = arm.train_step()
                    step = arm.step
                    self.guard.observe(step, result.loss_sum, result.grad_norm)
                    window_loss += result.loss_sum
                    window.add(result.items)
                    bar.update(1)
                    stop.step_done(step)
                    is_last = step == s.max_steps
                    is_log = step % s.log_every == 0 or is_last
                    is_eval = step % s.eval_every == 0 or is_last
                    is_save = step % s.save_every == 0 or is_last
                    if is_log or is_eval or is_save:
                        self.guard.check(step, weights=is_eval or is_save)  # before a log row or a save
                    if is_eval and not is_last and stop.requested(step, now=True):
                        stop.stop(step, self.save)  # an evaluation must not eat the shutdown grace
                    row: dict = {}
                    if is_log:  # one host sync: the all-reduced loss
                        row = {"train_loss": acc.reduce(window_loss, "sum").item() / max(window.items, 1),
                               arm.rate_key: window.rate(), **arm.log_row(result)}
                        bar.set_postfix(loss=f"{row['train_loss']:.4f}", rate=f"{row[arm.rate_key]:,.0f}")
                        window_loss = torch.zeros((), device=acc.device)
                        window.reset()
                    with window.paused() if is_eval or is_save else nullcontext():
                        evaluation = arm.evaluate() if is_eval else None
                        if evaluation is not None:
                            row.update(evaluation.metrics)
                        if row:
                            self.tracker.log(row, step)
                            last = row
                        if evaluation is not None:
                            self._checkpoint(evaluation, row)
                        if is_save:
                            self.save()
                    if not is_last and stop.requested(step):
                        stop.stop(step, None if is_save else self.save)
            finally:
                bar.close()
        self.tracker.finish()
        return RunResult(last, self.best_summary)

    def _checkpoint(self, evaluation: Evaluation, row: dict) -> None:
        """After an evaluation: its line, samples, `last` and (if improved) `best` checkpoints (main process)."""
        acc, step = self.acc, self.arm.step
        if evaluation.message:
            acc.print(evaluation.message)
        if acc.is_main_process:
            if evaluation.samples:
                self.tracker.log_samples(evaluation.samples, step)
            aliases = self.checkpoints.update(evaluation.rank, lambda path: self.arm.write_checkpoint(path, row))
            if "best" in aliases:
                self.best_summary = evaluation.summary if evaluation.summary is not None else row
            logged = self.checkpoints.root / ("best" if "best" in aliases else "last")
            self.tracker.log_checkpoint(logged, aliases, {"step": step, "val_loss": row.get("val_loss")})
        acc.wait_for_everyone()
