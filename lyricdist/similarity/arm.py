"""What both similarity models (MaLSTM, n-gram) share as arms of the one training loop (lyricdist.loop): epochs of
pair batches resumed at the batch a run stopped before, the log row, the evaluation's line and ranking (by
validation accuracy), the checkpoint's info, the held-out test set written at the start of a run. A model's own
arm adds its batches, its step on a batch, its held-out metrics and its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from ..fileio import atomic_write_json
from ..loop import ArmState, Evaluation, StepResult
from ..run import use_config_hyperparameters
from ..sources import Song
from ..state import SavedState
from .config import SimilarityConfig
from .pairs import Pair, PairSet

TEST_SET = "test_set.json"


def test_set(songs: list[Song], pairs: list[Pair]) -> dict:
    """The held-out pairs with their songs' texts, so `eval` sees exactly these songs even if the sources change."""
    used = sorted({i for a, b, _ in pairs for i in (a, b)})
    pos = {i: k for k, i in enumerate(used)}
    return {
        "songs": [{"artist": songs[i].artist, "title": songs[i].title, "text": songs[i].text} for i in used],
        "pairs": [[pos[a], pos[b], t] for a, b, t in pairs],
    }


class SiameseArm:
    """The shared part; subclasses define steps_per_epoch, batches, step_on, held_out, save_checkpoint,
    full_precision, restore_weights, `model`, `optimizer` and `scaler`."""

    rate_key = "pairs_per_sec"
    scaler: torch.amp.GradScaler | None = None

    def __init__(self, cfg: SimilarityConfig, pairs: PairSet, acc):
        self.cfg, self.pairs, self.acc = cfg, pairs, acc
        self.step = 0
        self._epoch_batches = None

    # ---- what a model's arm defines --------------------------------------------------------------------------
    def steps_per_epoch(self) -> int: ...
    def batches(self, epoch: int, skip: int) -> Iterable: ...
    def step_on(self, batch) -> tuple[torch.Tensor, int]: ...  # (mean loss, pairs in this process's batch)
    def held_out(self) -> tuple[dict, dict, float | None]: ...  # (test metrics, validation row, validation score)
    def save_checkpoint(self, path: Path, **info) -> None: ...
    def full_precision(self) -> dict[str, torch.Tensor]: ...
    def restore_weights(self, full: dict[str, torch.Tensor]) -> None: ...

    # ---- the arm ---------------------------------------------------------------------------------------------
    def epochs_done(self) -> int:
        return -(-self.step // self.steps_per_epoch())

    def train_step(self) -> StepResult:
        """One step on the next batch: an epoch's batches (1-based epochs) from the one `step` points at."""
        if self._epoch_batches is None:
            epoch, skip = divmod(self.step, self.steps_per_epoch())
            self._epoch_batches = iter(self.batches(epoch + 1, skip))
        loss, pairs = self.step_on(next(self._epoch_batches))
        self.step += 1
        if self.step % self.steps_per_epoch() == 0:
            self._epoch_batches = None
        return StepResult(loss.detach() * pairs, pairs * self.acc.num_processes)

    def log_row(self, last: StepResult) -> dict:
        return {"epoch": self.epochs_done(), "lr": self.cfg.train.lr}

    def evaluate(self) -> Evaluation:
        test, val, score = self.held_out()
        last = {f"test_{k}": v for k, v in test.items()}
        shown = f", validation {score:.1%}" if score is not None else ""
        message = (f"epoch {self.epochs_done()}: test accuracy {last['test_accuracy']:.1%}, "
                   f"deciles {last['test_decile_accuracy']:.1%}{shown}")
        return Evaluation({"epoch": self.epochs_done(), "val_loss": last["test_mse"], **last, **val},
                          rank=None if score is None else 1 - score, summary=last, message=message)

    def write_checkpoint(self, path: Path, row: dict) -> None:
        self.save_checkpoint(path, step=self.step, epoch=self.epochs_done(), sources=list(self.cfg.data.sources),
                             metrics={k: v for k, v in row.items() if k.startswith("test_")})

    def check_resumable(self, info: dict) -> None:
        pass  # the config keys a state depends on are checked by the loop (RESUME_CHECKED_KEYS)

    def resumable_state(self) -> ArmState:
        return ArmState({}, {}, self.full_precision())

    def restore(self, saved: SavedState) -> None:
        self.step = int(saved.info["step"])
        self.restore_weights(saved.full_precision)
        use_config_hyperparameters(self.acc, self.optimizer, self.cfg.train.lr, 0.0)  # the config's rate

    def ready(self) -> None:
        if self.acc.is_main_process:
            out = Path(self.cfg.train.out_dir)
            atomic_write_json(out / TEST_SET, test_set(self.pairs.songs, self.pairs.test))
            atomic_write_json(out / "pairs_info.json", self.pairs.info)

    def guarded(self):
        """What a save writes (checked for non-finite values), the scaler, and no gradient-norm check (the steps do
        not compute one)."""
        weights = [*self.acc.unwrap_model(self.model).parameters(), *self.full_precision().values()]
        return weights, self.scaler, False
