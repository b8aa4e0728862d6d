"""train: data-parallel truncated-BPTT training of a CharRNN with HuggingFace Accelerate.

`Trainer` is the char-RNN's arm of the one training loop (lyricdist.loop): set-up (accelerator, corpus streams,
model, precision, optimizer, schedule), one optimizer step over chunk c of every stream, the validation loss, the
checkpoint and the hidden state a resume needs. The loop around it (run directory, resume, log/evaluate/save
schedule, stop on a signal, divergence guard, tracker) is the same one the similarity models train in.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import save_checkpoint
from .config import RunConfig, TrainConfig
from .data import IGNORE_INDEX, Corpus, EvalStreams, StreamBatches
from .errors import LyricdistError
from .loop import ArmState, Evaluation, Loop, Schedule, StepResult
from .model import CharRNN, detach_state
from .precision import MixedPrecision, check_one_buffer
from .run import TrainingStopped, close_run_dir, lock_run_dir, make_accelerator, use_config_hyperparameters
from .generate import prime_ids, progress_samples
from .state import SavedState, resplit, restore_full_precision

SAMPLE_ARTISTS = 4  # progress samples of a conditioned model: one set per artist up to this many, else their mean
RESUME_CHECKED_KEYS = ("data", "model", "train.seq_len", "train.batch_size")


def lr_factor(step: int, t: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of train.lr for the update after `step` completed updates."""
    f = 1.0
    if t.warmup_steps and step < t.warmup_steps:
        f = (step + 1) / t.warmup_steps
    if t.lr_schedule == "cosine":
        span = max(t.max_steps - t.warmup_steps, 1)
        progress = min(max(step - t.warmup_steps, 0) / span, 1.0)
        f *= t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    elif t.lr_schedule == "epoch_decay":
        epochs_done = step // steps_per_epoch
        f *= t.lr_decay ** max(0, epochs_done - t.lr_decay_after + 1)
    return f


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed NLL of the scored targets (IGNORE_INDEX elsewhere), on the logits as they are (no fp32 copy)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=IGNORE_INDEX, reduction="sum")


def make_optimizer(params: list[torch.nn.Parameter], t: TrainConfig) -> torch.optim.Optimizer:
    # On CUDA the fused kernels: one launch for all tensors, and loss scaling without a host sync per step
    # (RMSprop has none: under fp16 its GradScaler step reads the inf check on the host).
    fused = {"fused": True} if params and all(p.device.type == "cuda" for p in params) else {}
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, **fused)
    if t.optimizer == "rmsprop":  # char-rnn's optim.rmsprop: decay 0.95
        return torch.optim.RMSprop(params, lr=t.lr, alpha=0.95, eps=1e-8, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay, **fused)


def vocab_sha256(chars: list[str]) -> str:
    return hashlib.sha256("".join(chars).encode("utf-8")).hexdigest()


class Trainer:
    """The char-RNN arm of lyricdist.loop.Loop; `fit()` runs the loop. With W processes rank r owns streams
    [r*B/W, (r+1)*B/W) of the global batch B, so the math is the same for any W."""

    rate_key = "chars_per_sec"  # real characters, all processes, training time only

    def __init__(self, cfg: RunConfig, resume: bool = False):
        from accelerate.utils import set_seed

        cfg.validate()
        self.cfg, t = cfg, cfg.train
        self.out = Path(t.out_dir)
        # The scheduler is stepped once per global step: batch_size is global.
        self.acc = acc = make_accelerator(cfg, step_scheduler_with_optimizer=False)
        lock_run_dir(acc, self.out, create=False)  # another run writing OUT_DIR: fail now, not after set-up
        self.corpus = corpus = Corpus(cfg.data.corpus)
        local = t.batch_size // acc.num_processes
        if local % t.grad_accum:
            raise LyricdistError(f"train.grad_accum={t.grad_accum} must divide the {local} streams per process "
                                 f"(train.batch_size / processes)")
        where = dict(rank=acc.process_index, world_size=acc.num_processes, vocab_size=len(corpus.vocab))
        self.batches = StreamBatches(corpus.tokens("train"), *corpus.doc_artist_ids("train"), t.batch_size,
                                     t.seq_len, **where).to(acc.device)
        self.val = EvalStreams(corpus.tokens("val"), *corpus.doc_artist_ids("val"), t.batch_size, t.seq_len,
                               **where).to(acc.device)
        acc.print(f"batches: {self.batches.placement}; {self.batches.summary()}")

        set_seed(t.seed)
        model = CharRNN(cfg.model, len(corpus.vocab), len(corpus.artists) if cfg.model.artist_embedding_dim else 0)
        self.vocab, self.init_info = corpus.vocab, None
        if t.init_from:
            from .transfer import init_from_checkpoint  # fine-tuning across vocabularies

            self.vocab, self.init_info = init_from_checkpoint(model, corpus.vocab, t.init_from, corpus.artists)
            acc.print(f"initialised from {t.init_from}: {self.init_info}")
        model.to(acc.device)
        # The probe runs the model's own recurrent layers at the micro-batch one step runs (lyricdist.precision).
        self.mp = MixedPrecision(acc, model, model.rnn, t.mixed_precision, local // t.grad_accum)
        self.optim_params = self.mp.trained_params(model.parameters())
        optimizer = make_optimizer(self.optim_params, t)
        cpe = self.batches.chunks_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t, cpe))
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        check_one_buffer(acc.unwrap_model(self.model).rnn, "start-up")
        set_seed(t.seed, device_specific=True)  # distinct dropout streams per process
        self.primetexts = self._primetexts()
        self.step, self.lr, self.state = 0, t.lr, None  # state: the hidden state carried between chunks
        schedule = Schedule(t.max_steps, t.log_every, t.eval_every, t.save_every or t.eval_every, t.stop_check_seconds)
        self.loop = Loop(self, schedule, cfg, self.out, resume, RESUME_CHECKED_KEYS)

    # the precision, as tests and benchmarks read it
    precision = property(lambda self: self.mp.precision)
    masters = property(lambda self: self.mp.masters)
    scaler = property(lambda self: self.mp.scaler)

    def fit(self) -> dict:
        """Run the loop to train.max_steps; returns the last logged metrics."""
        return self.loop.fit().last

    def _primetexts(self) -> list[str]:
        """The configured primetexts (unknown characters dropped with one warning), else a validation line."""
        if self.cfg.samples.primetexts:
            for text in self.cfg.samples.primetexts:
                prime_ids(self.vocab, text, drop_unknown=True)
            return list(self.cfg.samples.primetexts)
        tokens = self.corpus.tokens("val")
        if len(tokens) == 0:
            tokens = self.corpus.tokens("train")
        lines = [l for l in self.corpus.vocab.decode(np.asarray(tokens[:400])).split("\n") if l.strip()]
        return [lines[0][:60] + "\n"] if lines else ["\n"]

    # ---- resumable state ---------------------------------------------------------------------------------
    def check_resumable(self, info: dict) -> None:
        if info.get("vocab_sha256", vocab_sha256(self.vocab.chars)) != vocab_sha256(self.vocab.chars):
            raise LyricdistError(f"cannot resume: the corpus vocabulary differs from the one {self.out} was trained "
                                 f"with; use the original corpus or a new train.out_dir")

    def resumable_state(self) -> ArmState:
        hidden = {} if self.state is None else {f"h{i}": s for i, s in enumerate(self.state)}
        model = self.acc.unwrap_model(self.model)
        rnn = {k: v for k, v in self.mp.full_precision_state(model).items() if k.startswith("rnn.")}
        return ArmState({"vocab_sha256": vocab_sha256(self.vocab.chars), **self.mp.state_dict()}, hidden, rnn)

    def restore(self, saved: SavedState) -> None:
        t, acc = self.cfg.train, self.acc
        self.step = int(saved.info["step"])
        restore_full_precision(acc.unwrap_model(self.model).rnn, "rnn.", saved.full_precision, self.masters)
        self.mp.load_state_dict(saved.info)
        # a resume after a divergence changes train.lr: the config's, not the saved optimizer's
        use_config_hyperparameters(acc, self.optimizer, t.lr, t.weight_decay, self.scheduler,
                                   t.lr * lr_factor(self.step, t, self.batches.chunks_per_epoch))
        hidden = resplit(saved.per_process, self.batches.streams[0], self.batches.streams[-1] + 1)
        if hidden is not None:
            self.state = tuple(h.to(acc.device, self.mp.dtype) for h in hidden)

    def ready(self) -> None:
        """The first batch once, forward and backward, before step 1 (MixedPrecision.guard_first_step)."""
        if self.mp.guard_first_step(self._trial_step) and self.state is not None:
            self.state = tuple(s.to(self.mp.dtype) for s in self.state)

    def _trial_step(self) -> None:
        model = self.acc.unwrap_model(self.model)  # outside DDP: its reducer expects no backward without a forward
        chunk = self.step % self.batches.chunks_per_epoch
        b = self.batches.batch(chunk)
        micro = slice(0, b.x.shape[0] // self.cfg.train.grad_accum)
        state = None if self.state is None or chunk == 0 else tuple(s[:, micro] for s in self.state)
        try:
            with self.mp.autocast():
                logits, _ = model(b.x[micro], state, b.reset[micro], b.artist[micro])
                nll = token_nll(logits, b.y[micro])
            nll.backward()
        finally:
            model.zero_grad(set_to_none=True)

    def guarded(self):
        return self.optim_params, self.scaler, True

    # ---- one step, one evaluation ------------------------------------------------------------------------
    def train_step(self) -> StepResult:
        """One optimizer step on chunk c of every stream: this process's summed NLL, the global target count and
        the gradient norm.

        The loss is the mean over the targets of all processes' streams: each process scales its summed NLL by
        W / n_global, so DDP's gradient average is the gradient of the global mean, whatever W. Nothing here
        waits for the device: the batch is a slice of tables already there, the target count is a host int.
        """
        t, acc = self.cfg.train, self.acc
        chunk = self.step % self.batches.chunks_per_epoch
        if chunk == 0:
            self.state = None
        b = self.batches.batch(chunk)
        scale = acc.num_processes / max(b.n_global, 1)
        micro = b.x.shape[0] // t.grad_accum
        new_states, nll_total = [], torch.zeros((), device=acc.device)
        for m in range(t.grad_accum):
            sl = slice(m * micro, (m + 1) * micro)
            st = None if self.state is None else tuple(s[:, sl] for s in self.state)
            with acc.no_sync(self.model) if m < t.grad_accum - 1 else nullcontext():
                with self.mp.autocast():
                    logits, new_st = self.model(b.x[sl], st, b.reset[sl], b.artist[sl])
                    nll_sum = token_nll(logits, b.y[sl])
                acc.backward(self.mp.scale(nll_sum * scale))
            new_states.append(detach_state(new_st))
            nll_total += nll_sum.detach()
        self.state = tuple(torch.cat(parts, dim=1) for parts in zip(*new_states))
        self.lr = self.scheduler.get_last_lr()[0]  # the rate this update uses
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = self.mp.step(self.optimizer, lambda: acc.clip_grad_norm_(self.optim_params, max_norm))
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return StepResult(nll_total, b.n_global, grad_norm)

    def log_row(self, last: StepResult) -> dict:
        row = {"lr": self.lr, "grad_norm": float(last.grad_norm), "epoch": self.step / self.batches.chunks_per_epoch}
        if self.acc.device.type == "cuda":
            row["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.acc.device) / 2**30
        return row

    @torch.no_grad()
    def validation_loss(self) -> dict:
        """Validation loss over every real target of the split, all processes; {} without a validation split."""
        if self.val.n_targets == 0:
            return {}
        model = self.acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        total, state = torch.zeros((), dtype=torch.float64, device=self.acc.device), None
        for c in range(len(self.val)):
            b = self.val.batch(c)
            with self.mp.autocast():
                logits, state = model(b.x, state, b.reset, b.artist)
                total += token_nll(logits, b.y).double()
        model.train(was_training)
        loss = self.acc.reduce(total, "sum").item() / self.val.n_targets
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}

    def evaluate(self) -> Evaluation:
        """The validation loss (ranks `best`) and, on the main process, the progress samples."""
        metrics, samples = self.validation_loss(), []
        if self.acc.is_main_process and self.cfg.samples.enabled:
            s = self.cfg.samples
            with self.mp.autocast():
                rows = progress_samples(self.acc.unwrap_model(self.model), self.vocab, self.corpus.artists,
                                        self.primetexts, s.length, s.temperatures, s.seed + self.step, SAMPLE_ARTISTS)
            samples = [{"step": self.step, **row} for row in rows]
        return Evaluation(metrics, rank=metrics.get("val_loss"), samples=samples)

    def write_checkpoint(self, path: Path, row: dict) -> None:
        model = self.acc.unwrap_model(self.model)
        save_checkpoint(path, model, self.vocab, state=self.mp.full_precision_state(model),
                        artists=self.corpus.artists, step=self.step, val_loss=row.get("val_loss"),
                        train_loss=row.get("train_loss"), corpus=str(self.cfg.data.corpus),
                        train=asdict(self.cfg.train))


def train(cfg: RunConfig, resume: bool = False) -> dict:
    """Train per `cfg`; returns the last logged metrics. The run directory is locked for the run's life."""
    try:
        return Trainer(cfg, resume=resume).fit()
    finally:
        close_run_dir(Path(cfg.train.out_dir))


def cli_parser():
    from jsonargparse import ActionConfigFile

    from .options import new_parser
    from .config import DataConfig, SamplesConfig, TrackingConfig
    from .model import ModelConfig

    p = new_parser("Train a character-level RNN. Any config key can be overridden, e.g. --train.lr 1e-3.")
    p.add_argument("--config", action=ActionConfigFile, help="a YAML run config (see configs/)")
    p.add_class_arguments(DataConfig, "data")
    p.add_class_arguments(ModelConfig, "model")
    p.add_class_arguments(TrainConfig, "train")
    p.add_class_arguments(TrackingConfig, "tracking")
    p.add_class_arguments(SamplesConfig, "samples")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its state")
    return p


def config_from_args(parser, args) -> RunConfig:
    init = parser.instantiate(args)
    return RunConfig(data=init.data, model=init.model, train=init.train, tracking=init.tracking, samples=init.samples)


def load_config(path: str, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig from a YAML file plus command-line style overrides (used by tests and other stages)."""
    parser = cli_parser()
    return config_from_args(parser, parser.parse_args(["--config", str(path), *(overrides or [])]))


def cli_run(parser, args) -> int:
    from accelerate import PartialState

    try:
        metrics = train(config_from_args(parser, args), resume=args.resume)
    except TrainingStopped as stopped:
        return 128 + stopped.signum
    if metrics.get("val_loss") is not None and PartialState().is_main_process:
        print(f"final: val_loss {metrics['val_loss']:.4f} nats, {metrics['val_bpc']:.4f} bits/char")
    return 0
