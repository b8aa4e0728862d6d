"""Typed run configuration. Every key in a YAML config maps to one field here; the CLI is derived from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

from .errors import LyricdistError
from .model import ModelConfig


@dataclass
class DataConfig:
    """Training data.

    Args:
        corpus: a corpus directory written by `lyricdist prepare`
    """

    corpus: str = ""


@dataclass
class TrainConfig:
    """Optimisation and run settings.

    Args:
        seq_len: characters per truncated-BPTT chunk
        batch_size: global number of streams (split across processes)
        max_steps: optimizer steps to run
        optimizer: adam, adamw, rmsprop or sgd
        lr: peak learning rate
        weight_decay: weight decay (adamw/sgd)
        lr_schedule: constant; cosine (to min_lr_ratio*lr); epoch_decay (char-rnn: x lr_decay each epoch from
            lr_decay_after on)
        lr_decay: per-epoch factor for epoch_decay
        lr_decay_after: first epoch whose end applies lr_decay
        min_lr_ratio: floor of the cosine schedule as a fraction of lr
        warmup_steps: linear warm-up steps
        grad_clip: clip the global gradient norm to this (0 = off)
        grad_accum: split each batch's streams into this many micro-batches (same math, less memory)
        eval_every: steps between validation passes (and checkpoints)
        save_every: steps between resumable checkpoints (0 = at each evaluation)
        log_every: steps between log lines
        seed: random seed
        out_dir: where metrics, checkpoints and resumable state go
        mixed_precision: auto (the launcher's setting, else bf16 where the device computes it natively: an Ampere+
            GPU or a CPU with AMX/AVX512-BF16), no, fp16 or bf16. The RNN runs in the requested dtype only if its
            fused kernel takes it (else fp16 with loss scaling, else fp32/TF32); fp32 master weights either way
        cpu: force CPU even when a GPU is present
        init_from: a checkpoint to fine-tune from (vocabularies are merged)
        stop_check_seconds: with several processes, the most seconds of training between their checks for a stop
            signal (SIGTERM/SIGUSR1/^C); keep it well inside the launcher's grace (torchrun: 30 s to SIGKILL)
    """

    seq_len: int = 50
    batch_size: int = 50
    max_steps: int = 1000
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine", "epoch_decay"] = "constant"
    lr_decay: float = 0.97
    lr_decay_after: int = 10
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 5.0
    grad_accum: int = 1
    eval_every: int = 200
    save_every: int = 0
    log_every: int = 10
    seed: int = 1337
    out_dir: str = "runs/default"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    cpu: bool = False
    init_from: Optional[str] = None
    stop_check_seconds: float = 5.0


@dataclass
class TrackingConfig:
    """Experiment tracking.

    Args:
        backend: wandb or none
        project: wandb project
        entity: wandb entity (team or user)
        run_name: wandb run name (default: the out_dir's name)
        tags: wandb tags
        group: wandb group (default: the training corpus's name, so runs on one corpus group together)
        mode: online, offline or disabled; unset = WANDB_MODE, else online when wandb has credentials
            (WANDB_API_KEY or `wandb login`), else offline
        log_checkpoints: upload checkpoints as wandb Artifacts (aliases latest and best)
    """

    backend: Literal["wandb", "none"] = "wandb"
    project: str = "lyricdist"
    entity: Optional[str] = None
    run_name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    group: Optional[str] = None
    mode: Optional[Literal["online", "offline", "disabled"]] = None
    log_checkpoints: bool = True


@dataclass
class SamplesConfig:
    """Text generated at each evaluation to show progress.

    Args:
        enabled: generate samples at each evaluation
        primetexts: texts to continue (empty = a line taken from the validation text)
        temperatures: one sample per primetext and temperature
        length: characters generated per sample
        seed: sampling seed (sampling never touches the training RNG)
    """

    enabled: bool = True
    primetexts: list[str] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=lambda: [0.5, 1.0])
    length: int = 200
    seed: int = 0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)

    def validate(self) -> None:
        if not self.data.corpus:
            raise LyricdistError("data.corpus is not set; pass --data.corpus DIR (a `lyricdist prepare` output)")
        self.model.validate()
        t = self.train
        for name in ("seq_len", "batch_size", "max_steps", "eval_every", "log_every", "grad_accum"):
            if getattr(t, name) <= 0:
                raise LyricdistError(f"train.{name} must be positive, got {getattr(t, name)}")
        if t.lr <= 0:
            raise LyricdistError(f"train.lr must be positive, got {t.lr}")
        if t.stop_check_seconds <= 0:
            raise LyricdistError(f"train.stop_check_seconds must be positive, got {t.stop_check_seconds}")
        for name in ("grad_clip", "weight_decay", "warmup_steps", "save_every"):
            if getattr(t, name) < 0:
                raise LyricdistError(f"train.{name} must be >= 0, got {getattr(t, name)}")
        if not 0 < t.lr_decay <= 1:
            raise LyricdistError(f"train.lr_decay must be in (0, 1], got {t.lr_decay}")
        if not 0 <= t.min_lr_ratio <= 1:
            raise LyricdistError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
        if self.samples.enabled and not self.samples.temperatures:
            raise LyricdistError("samples.temperatures is empty; give at least one, e.g. [0.5, 1.0]")
        if any(temp <= 0 for temp in self.samples.temperatures):
            raise LyricdistError(f"samples.temperatures must be positive, got {self.samples.temperatures}")
        if self.samples.length <= 0:
            raise LyricdistError(f"samples.length must be positive, got {self.samples.length}")

    def to_dict(self) -> dict:
        return asdict(self)
