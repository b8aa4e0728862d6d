"""Typed run configuration. Every key in a YAML config maps to one field here; the CLI is derived from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

from jsonargparse.typing import (ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                 PositiveInt)

from .errors import LyricdistError
from .model import ModelConfig
from .options import DecayFactor, check_fields, plain, plain_fields


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

    seq_len: PositiveInt = 50
    batch_size: PositiveInt = 50
    max_steps: PositiveInt = 1000
    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: PositiveFloat = 2e-3
    weight_decay: NonNegativeFloat = 0.0
    lr_schedule: Literal["constant", "cosine", "epoch_decay"] = "constant"
    lr_decay: DecayFactor = 0.97
    lr_decay_after: int = 10
    min_lr_ratio: ClosedUnitInterval = 0.1
    warmup_steps: NonNegativeInt = 0
    grad_clip: NonNegativeFloat = 5.0
    grad_accum: PositiveInt = 1
    eval_every: PositiveInt = 200
    save_every: NonNegativeInt = 0
    log_every: PositiveInt = 10
    seed: int = 1337
    out_dir: str = "runs/default"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    cpu: bool = False
    init_from: Optional[str] = None
    stop_check_seconds: PositiveFloat = 5.0

    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)


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

    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)


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
    temperatures: list[PositiveFloat] = field(default_factory=lambda: [0.5, 1.0])
    length: PositiveInt = 200
    seed: int = 0

    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)

    def validate(self) -> None:
        """Ranges come from the fields' types (as on the command line); what no type says is checked here."""
        if not self.data.corpus:
            raise LyricdistError("data.corpus is not set; pass --data.corpus DIR (a `lyricdist prepare` output)")
        check_fields(self)
        if self.samples.enabled and not self.samples.temperatures:
            raise LyricdistError("samples.temperatures is empty; give at least one, e.g. [0.5, 1.0]")

    def to_dict(self) -> dict:
        return plain(asdict(self))
