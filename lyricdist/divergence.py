"""Stop a diverging run, saying where and what to change, before anything non-finite is saved.

A run whose loss becomes inf/NaN would otherwise go on for all its steps and publish NaN weights into
`checkpoints/last` and `state/`, the files `sample`, `push` and `--resume` read. `DivergenceGuard` watches every
step without a host sync: each step's loss and gradient norm are copied into a small device-side table, and the
table is read once at the steps that already wait for the device (log steps) and before every save. A check
finds the first step whose loss or gradient norm was not finite, and whether the weights still are (an update can
overflow them while the loss it came from was finite), and raises `TrainingDiverged` on every process at once.

Under fp16 loss scaling an overflowing gradient is expected: GradScaler skips that step and halves its scale, so
gradient norms are not checked there. A scale that keeps falling is reported instead (a warning below 1, a
divergence below 2^-24, where even the smallest fp16 gradient overflows and no step can succeed).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import torch

from .errors import TrainingDiverged
from .state import STATE_DIR, STATE_INFO

WINDOW = 4096  # steps kept between two reads; a run logging less often than this is checked every WINDOW steps
SCALE_WARNING = 1.0  # fp16 loss scale below which overflows are reported
SCALE_FLOOR = 2.0**-24  # ... and below which the run is stopped: fp16's smallest subnormal


class DivergenceGuard:
    """Watches a training loop for non-finite losses, gradient norms and weights.

    `observe` after each optimizer step (device copies only), `check` at log steps and, with the weights, before
    every save (a collective: every process calls it at the same steps), `stepping` around the step itself (an optimizer whose
    update overflows float32 raises a RuntimeError there). `params` are the tensors a save writes (the fp32
    masters where the model computes in 16 bits); `fix` says what to change, e.g. "lower train.lr (now 2)".
    """

    def __init__(self, acc, out_dir: str | Path, params: Iterable[torch.Tensor], fix: str,
                 scaler: torch.amp.GradScaler | None = None, grad_norm: bool = True):
        self.acc, self.out, self.params, self.fix = acc, Path(out_dir), list(params), fix
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.grad_norm = grad_norm and self.scaler is None  # fp16: overflowing gradients are the scaler's to skip
        self._rows = torch.zeros(WINDOW, 2, device=acc.device)  # (loss, gradient norm) of each step of the window
        # The loss scale after each step; row 0 is the scale before the window (NaN: unknown).
        self._scales = torch.full((WINDOW + 1,), math.nan, device=acc.device) if self.scaler else None
        self._steps: list[int] = []
        self._clean_at: tuple[int, bool] | None = None  # (step, weights too?) last found clean: not read twice
        self._warned_scale = False

    @contextmanager
    def stepping(self, step: int) -> Iterator[None]:
        """Around optimizer step `step`: an update too large for float32 is divergence, not a crash."""
        try:
            yield
        except RuntimeError as e:
            if "without overflow" not in str(e):
                raise
            raise self.diverged(step, f"the optimizer's update overflowed float32 ({e})") from None

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | float | None = None) -> None:
        """Record step `step`'s loss (and gradient norm): one or two device copies, no host sync."""
        if len(self._steps) == WINDOW:
            self.check(self._steps[-1], weights=False)
        row = self._rows[len(self._steps)]
        row[0].fill_(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if self.grad_norm and grad_norm is not None:
            row[1].fill_(grad_norm.detach() if isinstance(grad_norm, torch.Tensor) else grad_norm)
        if self.scaler is not None and self.scaler._scale is not None:  # GradScaler's scale, on the device
            self._scales[len(self._steps) + 1].copy_(self.scaler._scale.reshape(()))
        self._steps.append(step)

    def check(self, step: int, weights: bool = True) -> None:
        """Raise TrainingDiverged (on every process) if a loss or gradient norm since the last check, or (with
        `weights`, before a save) a weight, is not finite. One host read (and one all-gather with several
        processes)."""
        if self._clean_at is not None and self._clean_at[0] == step and (self._clean_at[1] or not weights):
            return
        n = len(self._steps)
        weights_ok = None
        if weights and self.params:
            weights_ok = torch.stack([torch.isfinite(p).all() for p in self.params]).all()
        parts = [self._rows[:n].flatten(), torch.ones(1, device=self.acc.device)]
        if weights_ok is not None:
            parts[1] = weights_ok.float().reshape(1)
        if self._scales is not None:
            parts.append(self._scales[: n + 1])
        record = torch.cat(parts)
        if self.acc.num_processes > 1:
            record = self.acc.gather(record)
        values = record.tolist()
        size = len(values) // self.acc.num_processes
        first, weights_bad = None, False
        for rank in range(self.acc.num_processes):
            mine = values[rank * size : (rank + 1) * size]
            for i in range(n):
                loss, norm = mine[2 * i], mine[2 * i + 1]
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    if first is None or i < first[0]:
                        first = (i, loss, norm)
                    break
            weights_bad = weights_bad or mine[2 * n] == 0
        if first is not None:
            i, loss, norm = first
            if math.isfinite(loss):
                what = f"the gradient norm is {norm}"
            else:
                what = f"the training loss is {loss}" + ("" if math.isfinite(norm) else f", the gradient norm {norm}")
            raise self.diverged(self._steps[i], what)
        if weights_bad:
            raise self.diverged(step, "the weights are no longer finite")
        if self._scales is not None:
            self._check_scale(step, values[2 * n + 1 : 2 * n + 1 + n + 1])
        self._steps = []
        self._clean_at = (step, weights)

    def _check_scale(self, step: int, scales: list[float]) -> None:
        """fp16: report a loss scale that keeps falling (each fall is an overflowed, skipped step)."""
        seen = [s for s in scales if not math.isnan(s)]
        if not seen:
            return
        skipped = sum(1 for a, b in zip(scales, scales[1:]) if b < a)
        now = seen[-1]
        told = f"{skipped} of the last {len(scales) - 1} steps overflowed and were skipped"
        if now < SCALE_FLOOR:
            raise self.diverged(step, f"the fp16 loss scale collapsed to {now:.3g} ({told}): no step can succeed")
        if now < SCALE_WARNING and not self._warned_scale:
            self.acc.print(f"warning: the fp16 loss scale fell to {now:.3g} at step {step} ({told}); if it keeps "
                           f"falling, {self.fix} or use train.mixed_precision bf16")
        self._warned_scale = now < SCALE_WARNING
        if self._scales is not None:
            self._scales[0].copy_(self._scales[len(scales) - 1])

    def diverged(self, step: int, what: str) -> TrainingDiverged:
        """The one-line error: where, what, what to change, and what --resume will start from."""
        kept = _saved_step(self.out)
        if kept is None:
            saved, then = "no state was saved yet", "then start again"
        else:
            saved, then = f"the last good state (step {kept}) is kept in {self.out / STATE_DIR}", "then --resume"
        return TrainingDiverged(f"training diverged at step {step}: {what}. Nothing non-finite was saved; {saved}. "
                                f"Try: {self.fix}, {then}")


def _saved_step(out: Path) -> int | None:
    try:
        return int(json.loads((out / STATE_DIR / STATE_INFO).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fix_hint(lr: float, grad_clip: float) -> str:
    """What to try, with the current values: a lower learning rate, and clipping if it is off."""
    clip = "set train.grad_clip (e.g. 1; now 0 = off)" if not grad_clip else f"lower train.grad_clip (now {grad_clip:g})"
    return f"lower train.lr (now {lr:g}) or {clip}"
