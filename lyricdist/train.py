"""train: data-parallel truncated-BPTT training of a CharRNN with HuggingFace Accelerate.

Reads top to bottom: set up (accelerator, corpus, model, optimizer, schedule), maybe resume, then a loop that
decides once per step whether to log, evaluate and save. Only the main process logs and writes checkpoints; every
process writes its share of the resumable state (lyricdist.state). The run plumbing (accelerator, run directory,
stop on a signal, throughput) is lyricdist.run's, shared with the similarity trainer.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import BestAndLast, save_checkpoint
from .config import RunConfig, TrainConfig
from .data import IGNORE_INDEX, Corpus, EvalStreams, StreamBatches
from .divergence import DivergenceGuard, fix_hint
from .errors import LyricdistError
from .model import CharRNN, detach_state
from .precision import (RNNShape, cast_rnn, check_one_buffer, choose_precision, full_precision_state, masters_for,
                        optimizer_step, trained_params)
from .run import (StopOnSignal, ThroughputWindow, TrainingStopped, close_run_dir, lock_run_dir, make_accelerator,
                  open_run_dir, use_config_hyperparameters)
from .sample import prime_ids, progress_samples
from .state import EXACTNESS, load_state, resplit, restore_full_precision, save_state
from .tracking import Tracker

STOP_CALIBRATION_STEPS = 5  # steps timed to space the stop-signal agreements of several processes
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
    def __init__(self, cfg: RunConfig, resume: bool = False):
        cfg.validate()
        self.cfg = cfg
        t = cfg.train
        self.out = Path(t.out_dir)
        # The scheduler is stepped once per global step: batch_size is global.
        self.acc = acc = make_accelerator(cfg, step_scheduler_with_optimizer=False)
        lock_run_dir(acc, self.out, create=False)  # another run writing OUT_DIR: fail now, not after set-up
        from accelerate.utils import set_seed

        self.corpus = corpus = Corpus(cfg.data.corpus)
        starts, artists = corpus.doc_artist_ids("train")
        self.batches = StreamBatches(
            corpus.tokens("train"), starts, artists, t.batch_size, t.seq_len, acc.process_index, acc.num_processes,
            vocab_size=len(corpus.vocab),
        ).to(acc.device)
        local = t.batch_size // acc.num_processes
        if local % t.grad_accum:
            raise LyricdistError(
                f"train.grad_accum={t.grad_accum} must divide the {local} streams per process "
                f"(train.batch_size / processes)"
            )
        vstarts, vartists = corpus.doc_artist_ids("val")
        self.val = EvalStreams(
            corpus.tokens("val"), vstarts, vartists, t.batch_size, t.seq_len, acc.process_index, acc.num_processes,
            vocab_size=len(corpus.vocab),
        ).to(acc.device)
        acc.print(f"batches: {self.batches.placement}; {self.batches.summary()}")

        set_seed(t.seed)
        num_artists = len(corpus.artists) if cfg.model.artist_embedding_dim else 0
        model = CharRNN(cfg.model, len(corpus.vocab), num_artists=num_artists)
        self.vocab, self.init_info = corpus.vocab, None
        if t.init_from:
            from .transfer import init_from_checkpoint  # fine-tuning across vocabularies

            self.vocab, self.init_info = init_from_checkpoint(model, corpus.vocab, t.init_from, corpus.artists)
            acc.print(f"initialised from {t.init_from}: {self.init_info}")
        model.to(acc.device)
        # The probe runs the model's own recurrent layers at the micro-batch one step runs (lyricdist.precision).
        self.rnn_shape = RNNShape.of(model.rnn, local // t.grad_accum)
        self.precision = choose_precision(t.mixed_precision, acc.device, self.rnn_shape)
        acc.print(self.precision.describe())
        self._tf32_if_fp32()
        self.masters = masters_for(model, model.rnn, self.precision)
        self.optim_params = trained_params(model.parameters(), self.masters)
        optimizer = make_optimizer(self.optim_params, t)
        cpe = self.batches.chunks_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t, cpe))
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        check_one_buffer(acc.unwrap_model(self.model).rnn, "start-up")
        self.scaler = torch.amp.GradScaler(acc.device.type, enabled=self.precision.loss_scaling)
        self.guard = self._divergence_guard()
        set_seed(t.seed, device_specific=True)  # distinct dropout streams per process
        self.primetexts = self._primetexts()

        self.step, self.lr, self.state = 0, t.lr, None  # state: the hidden state carried between chunks
        self.checkpoints = BestAndLast(self.out)
        self.clock = time.perf_counter  # of the throughput window; a test may give it a fake clock
        run_id = None
        state_dir = open_run_dir(acc, self.out, cfg.to_dict(), resume, RESUME_CHECKED_KEYS)
        if state_dir is not None:
            run_id = self.load_state(state_dir)
        self.tracker = Tracker(acc, cfg, self.out, run_id=run_id, resume_step=self.step)
        self._guard_first_step()

    def _divergence_guard(self) -> DivergenceGuard:
        t = self.cfg.train
        return DivergenceGuard(self.acc, self.out, self.optim_params, fix_hint(t.lr, t.grad_clip), self.scaler)

    def _tf32_if_fp32(self) -> None:
        if self.acc.device.type == "cuda" and not self.precision.low_precision:  # fp32 weights, TF32 tensor cores
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def _guard_first_step(self) -> None:
        """Run the first training batch forward and backward once, before training: a 16-bit kernel that passed the
        probe but fails on the real model and batch falls back now (the next candidate, the same one-line message)
        instead of crashing the run at step 1, an hour into a queue. Outside DDP (its reducer expects no backward
        without a forward through it), random state forked: the run computes exactly what it would without this."""
        failed: list[tuple[str, str]] = []
        while self.precision.low_precision:
            try:
                self._trial_step()
                return
            except (RuntimeError, NotImplementedError) as e:
                if self.precision.name in {name for name, _ in failed}:
                    raise
                first_line = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
                failed.append((self.precision.name, f"failed in the first training step ({type(e).__name__}: "
                                                    f"{first_line})"))
                self.precision = choose_precision(self.cfg.train.mixed_precision, self.acc.device, self.rnn_shape,
                                                  tuple(failed))
                self.acc.print(self.precision.describe())
                rnn = self.acc.unwrap_model(self.model).rnn
                cast_rnn(rnn, self.precision.rnn_dtype)
                self.masters.after_step()  # the masters, rounded to the new dtype, back into the weights
                self.scaler = torch.amp.GradScaler(self.acc.device.type, enabled=self.precision.loss_scaling)
                self.guard = self._divergence_guard()  # fp16 now: its overflows are the scaler's to skip
                if self.state is not None:
                    self.state = tuple(s.to(self.precision.rnn_dtype) for s in self.state)
                self._tf32_if_fp32()

    def _trial_step(self) -> None:
        t, dev = self.cfg.train, self.acc.device
        model = self.acc.unwrap_model(self.model)
        chunk = self.step % self.batches.chunks_per_epoch
        b = self.batches.batch(chunk)
        micro = slice(0, b.x.shape[0] // t.grad_accum)
        state = None if self.state is None or chunk == 0 else tuple(s[:, micro] for s in self.state)
        try:
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                with self.precision.autocast(dev):
                    logits, _ = model(b.x[micro], state, b.reset[micro], b.artist[micro])
                    nll = token_nll(logits, b.y[micro])
                nll.backward()
        finally:
            model.zero_grad(set_to_none=True)
            if self.masters:
                self.masters.zero_grad()

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

    # ---- resumable state (lyricdist.state) ---------------------------------------------------------------
    def save_state(self) -> None:
        self.guard.check(self.step)  # never a state with non-finite weights, even between log steps
        hidden = {} if self.state is None else {f"h{i}": s for i, s in enumerate(self.state)}
        model = self.acc.unwrap_model(self.model)
        rnn = {k: v for k, v in full_precision_state(model, self.masters).items() if k.startswith("rnn.")}
        info = {
            "step": self.step,
            "best_val_loss": self.checkpoints.best_or_none,
            "wandb_run_id": self.tracker.run_id,
            "vocab_sha256": vocab_sha256(self.vocab.chars),
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }
        save_state(self.acc, self.out / "state", info, hidden, rnn)

    def load_state(self, state_dir: Path) -> str | None:
        def same_vocabulary(info: dict) -> None:
            if info.get("vocab_sha256", vocab_sha256(self.vocab.chars)) != vocab_sha256(self.vocab.chars):
                raise LyricdistError(
                    f"cannot resume: the corpus vocabulary differs from the one {self.out} was trained with; "
                    f"use the original corpus or a new train.out_dir"
                )

        acc = self.acc
        saved = load_state(acc, state_dir, same_vocabulary)
        self.step = int(saved.info["step"])
        best = saved.info.get("best_val_loss")
        self.checkpoints.best = math.inf if best is None else float(best)
        restore_full_precision(acc.unwrap_model(self.model).rnn, "rnn.", saved.full_precision, self.masters)
        if saved.info.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(saved.info["grad_scaler"])
        t = self.cfg.train  # a resume after a divergence changes train.lr: the config's, not the saved optimizer's
        use_config_hyperparameters(acc, self.optimizer, t.lr, t.weight_decay, self.scheduler,
                                   t.lr * lr_factor(self.step, t, self.batches.chunks_per_epoch))
        hidden = resplit(saved.per_process, self.batches.streams[0], self.batches.streams[-1] + 1)
        if hidden is not None:
            self.state = tuple(h.to(acc.device, self.precision.rnn_dtype) for h in hidden)
        acc.print(f"resumed from {state_dir} at step {self.step}: {EXACTNESS[acc.device.type == 'cuda']}")
        return saved.info.get("wandb_run_id")

    # ---- one step, one evaluation ------------------------------------------------------------------------
    def train_step(self) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One optimizer step on chunk c of every stream: (this process's summed NLL, global targets, grad norm).

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
            sync = acc.no_sync(self.model) if m < t.grad_accum - 1 else nullcontext()
            with sync:
                with self.precision.autocast(acc.device):
                    logits, new_st = self.model(b.x[sl], st, b.reset[sl], b.artist[sl])
                    nll_sum = token_nll(logits, b.y[sl])
                acc.backward(self.scaler.scale(nll_sum * scale))
            new_states.append(detach_state(new_st))
            nll_total += nll_sum.detach()
        self.state = tuple(torch.cat(parts, dim=1) for parts in zip(*new_states))
        self.lr = self.scheduler.get_last_lr()[0]  # the rate this update uses
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = optimizer_step(self.optimizer.optimizer, self.scaler, self.masters,
                                   lambda: acc.clip_grad_norm_(self.optim_params, max_norm))
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return nll_total, b.n_global, grad_norm

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss over every real target of the split, all processes; {} without a validation split."""
        if self.val.n_targets == 0:
            return {}
        model = self.acc.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        dev = self.acc.device
        total = torch.zeros((), dtype=torch.float64, device=dev)
        state = None
        for c in range(len(self.val)):
            b = self.val.batch(c)
            with self.precision.autocast(dev):
                logits, state = model(b.x, state, b.reset, b.artist)
                total += token_nll(logits, b.y).double()
        total = self.acc.reduce(total, "sum")
        model.train(was_training)
        loss = total.item() / self.val.n_targets
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}

    # ---- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> dict:
        from tqdm.auto import tqdm

        t, acc = self.cfg.train, self.acc
        save_every = t.save_every or t.eval_every
        bar = tqdm(total=t.max_steps, initial=self.step, disable=not acc.is_main_process, unit="step",
                   dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)  # short batch-job logs
        window = ThroughputWindow(acc.device, self.clock)
        window_nll = torch.zeros((), device=acc.device)
        last_metrics: dict = {}
        self.model.train()
        first_step, started = self.step, time.perf_counter()
        with StopOnSignal(acc, t.log_every, t.stop_check_seconds) as stop:
            try:
                while self.step < t.max_steps:
                    with self.guard.stepping(self.step + 1):
                        nll, n_targets, grad_norm = self.train_step()
                    self.guard.observe(self.step, nll, grad_norm)
                    window_nll += nll
                    window.add(n_targets)
                    bar.update(1)
                    is_last = self.step == t.max_steps
                    is_log = self.step % t.log_every == 0 or is_last
                    is_eval = self.step % t.eval_every == 0 or is_last
                    is_save = self.step % save_every == 0 or is_last
                    if is_log or is_eval or is_save:
                        self.guard.check(self.step, weights=is_eval or is_save)  # before a log row or a save
                    if self.step == first_step + STOP_CALIBRATION_STEPS:
                        stop.calibrate((time.perf_counter() - started) / STOP_CALIBRATION_STEPS)
                    if is_eval and not is_last and stop.requested(self.step, now=True):
                        stop.stop(self.step, self.save_state)  # an evaluation must not eat the shutdown grace
                    metrics = {}
                    if is_log:
                        metrics = self.train_metrics(window, window_nll, grad_norm)
                        bar.set_postfix(loss=f"{metrics['train_loss']:.4f}",
                                        chars_s=f"{metrics['chars_per_sec']:,.0f}")
                        window_nll = torch.zeros((), device=acc.device)
                        window.reset()
                    with window.paused() if is_eval or is_save else nullcontext():
                        if is_eval:
                            metrics.update(self.evaluate())
                        if metrics:
                            self.tracker.log(metrics, self.step)
                            last_metrics = metrics
                        if is_eval:
                            self.on_evaluation(metrics)
                        if is_save:
                            self.save_state()
                    if not is_last and stop.requested(self.step):
                        stop.stop(self.step, None if is_save else self.save_state)
            finally:
                bar.close()
        self.tracker.finish()
        return last_metrics

    def train_metrics(self, window: ThroughputWindow, window_nll: torch.Tensor, grad_norm: torch.Tensor) -> dict:
        """The log row of a training window (one host sync: the all-reduced loss)."""
        acc = self.acc
        metrics = {
            "train_loss": acc.reduce(window_nll, "sum").item() / max(window.items, 1),
            "chars_per_sec": window.rate(),  # real characters, all processes, training time only
            "lr": self.lr,
            "grad_norm": float(grad_norm),
            "epoch": self.step / self.batches.chunks_per_epoch,
        }
        if acc.device.type == "cuda":
            metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
        return metrics

    def on_evaluation(self, metrics: dict) -> None:
        """Samples, `last` and (if improved) `best` checkpoints: main process only. Called at every evaluation,
        with or without a validation split."""
        if not self.acc.is_main_process:
            return
        model = self.acc.unwrap_model(self.model)
        if self.cfg.samples.enabled:
            s = self.cfg.samples
            with self.precision.autocast(self.acc.device):
                rows = progress_samples(model, self.vocab, self.corpus.artists, self.primetexts, s.length,
                                        s.temperatures, s.seed + self.step, SAMPLE_ARTISTS)
            self.tracker.log_samples([{"step": self.step, **row} for row in rows], self.step)
        val = metrics.get("val_loss")
        aliases = self.checkpoints.update(val, lambda path: save_checkpoint(
            path, model, self.vocab,
            state=full_precision_state(model, self.masters),
            artists=self.corpus.artists,
            step=self.step,
            val_loss=val,
            train_loss=metrics.get("train_loss"),
            corpus=str(self.cfg.data.corpus),
            train=asdict(self.cfg.train),
        ))
        logged = self.checkpoints.root / ("best" if "best" in aliases else "last")
        self.tracker.log_checkpoint(logged, aliases, {"step": self.step, "val_loss": val})


def train(cfg: RunConfig, resume: bool = False) -> dict:
    """Train per `cfg`; returns the last logged metrics. The run directory is locked for the run's life."""
    try:
        return Trainer(cfg, resume=resume).fit()
    finally:
        close_run_dir(Path(cfg.train.out_dir))


def cli_parser():
    from jsonargparse import ActionConfigFile

    from .cli import new_parser
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
