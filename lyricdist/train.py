"""train: data-parallel truncated-BPTT training of a CharRNN with HuggingFace Accelerate.

Reads top to bottom: set up (accelerator, corpus, model, optimizer, schedule), maybe resume, then a loop of
step -> log -> evaluate/sample/checkpoint. Only the main process logs and writes checkpoints; every process
writes its share of the resumable state (RNG, hidden states).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from .checkpoint import save_checkpoint
from .config import RunConfig, TrainConfig
from .data import IGNORE_INDEX, Corpus, EvalStreams, StreamBatches
from .errors import LyricdistError
from .fileio import atomic_write_json, atomic_write_text, recover_dir, replace_dir
from .model import CharRNN, detach_state
from .precision import choose_precision, full_precision_state, masters_for, optimizer_step, trained_params
from .sample import generate
from .tracking import Tracker

STATE_DIR = "state"
RNN_FP32_FILE = "rnn_fp32.safetensors"
EXACTNESS = {
    False: "exact on CPU (bitwise the weights of an uninterrupted run)",
    True: "same data order, optimizer, scaler and RNG state; on a GPU losses match an uninterrupted run only to "
    "about 1e-3 (cuDNN draws inter-layer dropout masks from its own unsaved state and its RNN backward is not "
    "deterministic)",
}
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
    """Summed NLL of the scored targets (IGNORE_INDEX elsewhere). Under autocast the loss runs in fp32 as autocast
    decides; without it, on the logits as they are (no fp32 copy)."""
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


def make_accelerator(cfg: RunConfig):
    """Accelerate for devices, processes and tracking; precision is lyricdist.precision's (accelerate's autocast
    would run the RNN in fp16 and convert the full logits to fp32)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    use_wandb = cfg.tracking.backend == "wandb" and cfg.tracking.mode != "disabled"
    return Accelerator(
        cpu=cfg.train.cpu,
        mixed_precision="no",
        log_with="wandb" if use_wandb else None,
        project_config=ProjectConfiguration(project_dir=cfg.train.out_dir),
        step_scheduler_with_optimizer=False,  # we step it once per global step: batch_size is global
    )


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _check_resume_config(saved: dict, cfg: RunConfig) -> None:
    now, before = _flatten(cfg.to_dict()), _flatten(saved)
    for key in now:
        if key.startswith(RESUME_CHECKED_KEYS) and key in before and before[key] != now[key]:
            raise LyricdistError(
                f"cannot resume: {key} was {before[key]!r} and is now {now[key]!r}; "
                f"use the run's config ({cfg.train.out_dir}/config.yaml) or a new train.out_dir"
            )


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False):
        cfg.validate()
        self.cfg = cfg
        t = cfg.train
        self.out = Path(t.out_dir)
        self.acc = acc = make_accelerator(cfg)
        from accelerate.utils import set_seed

        self.corpus = corpus = Corpus(cfg.data.corpus)
        self.vocab = corpus.vocab
        starts, artists = corpus.doc_artist_ids("train")
        self.batches = StreamBatches(
            corpus.tokens("train"), starts, artists, t.batch_size, t.seq_len, acc.process_index, acc.num_processes
        ).to(acc.device)
        local = t.batch_size // acc.num_processes
        if local % t.grad_accum:
            raise LyricdistError(
                f"train.grad_accum={t.grad_accum} must divide the {local} streams per process "
                f"(train.batch_size / processes)"
            )
        vstarts, vartists = corpus.doc_artist_ids("val")
        self.val = EvalStreams(
            corpus.tokens("val"), vstarts, vartists, t.batch_size, t.seq_len, acc.process_index, acc.num_processes
        ).to(acc.device)
        acc.print(f"batches: {self.batches.placement}; {self.batches.summary()}")
        self.precision = choose_precision(t.mixed_precision, acc.device, cfg.model.cell)
        acc.print(self.precision.describe())
        if acc.device.type == "cuda" and not self.precision.low_precision:  # fp32 weights, TF32 tensor-core math
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

        set_seed(t.seed)
        num_artists = len(corpus.artists) if cfg.model.artist_embedding_dim else 0
        model = CharRNN(cfg.model, len(self.vocab), num_artists=num_artists)
        self.init_info = None
        if t.init_from:
            from .transfer import init_from_checkpoint  # fine-tuning across vocabularies

            self.init_info = init_from_checkpoint(model, self.vocab, t.init_from, artists=corpus.artists)
            acc.print(f"initialised from {t.init_from}: {self.init_info}")
        model.to(acc.device)
        self.masters = masters_for(model.rnn, self.precision)
        self.optim_params = trained_params(model.parameters(), self.masters)
        optimizer = make_optimizer(self.optim_params, t)
        cpe = self.batches.chunks_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t, cpe))
        self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
        acc.unwrap_model(self.model).rnn.flatten_parameters()
        self.scaler = torch.amp.GradScaler(acc.device.type, enabled=self.precision.loss_scaling)
        set_seed(t.seed, device_specific=True)  # distinct dropout streams per process

        self.step = 0
        self.lr = t.lr
        self.vocab_hash = hashlib.sha256("".join(self.vocab.chars).encode("utf-8")).hexdigest()
        self.best_val = float("inf")
        self.state = None  # hidden state carried between chunks
        run_id = None
        state_dir = self.out / STATE_DIR
        if acc.is_main_process:
            recover_dir(state_dir)
        acc.wait_for_everyone()
        has_state = (state_dir / "trainer_state.json").is_file()
        if has_state and not resume:
            raise LyricdistError(
                f"{self.out} holds a run in progress; pass --resume to continue it, or choose another train.out_dir"
            )
        if resume and has_state:
            saved_cfg = yaml.safe_load((self.out / "config.yaml").read_text(encoding="utf-8"))
            _check_resume_config(saved_cfg, cfg)
            run_id = self._load_state(state_dir)
        elif resume:
            acc.print(f"no resumable state in {state_dir}: starting a new run")
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.tracker = Tracker(acc, cfg, self.out, run_id=run_id, resume_step=self.step)

    # ---- resumable state -------------------------------------------------------------------------------
    def _save_state(self) -> None:
        acc = self.acc
        final = self.out / STATE_DIR
        tmp = self.out / f".{STATE_DIR}.tmp-{self.step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        hidden = {} if self.state is None else {f"h{i}": s.contiguous() for i, s in enumerate(self.state)}
        save_file({k: v.cpu() for k, v in hidden.items()}, str(tmp / f"hidden_{acc.process_index}.safetensors"))
        acc.wait_for_everyone()
        if acc.is_main_process:
            # The RNN's weights at full precision (its fp32 masters when it computes in 16 bits): resuming under
            # another precision, or from a 16-bit run, loses nothing.
            rnn_state = {k: v for k, v in full_precision_state(self.acc.unwrap_model(self.model), self.masters).items() if k.startswith("rnn.")}
            save_file({k: v.detach().cpu().contiguous() for k, v in rnn_state.items()}, str(tmp / RNN_FP32_FILE))
            atomic_write_json(
                tmp / "trainer_state.json",
                {
                    "step": self.step,
                    "best_val_loss": None if math.isinf(self.best_val) else self.best_val,
                    "num_processes": acc.num_processes,
                    "wandb_run_id": self.tracker.run_id,
                    "vocab_sha256": self.vocab_hash,
                    "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                },
            )
            replace_dir(tmp, final)
        acc.wait_for_everyone()

    def _load_state(self, state_dir: Path) -> str | None:
        acc = self.acc
        try:
            info = json.loads((state_dir / "trainer_state.json").read_text(encoding="utf-8"))
            if info.get("vocab_sha256", self.vocab_hash) != self.vocab_hash:
                raise LyricdistError(
                    f"cannot resume: the corpus vocabulary differs from the one {self.out} was trained with; "
                    f"use the original corpus or a new train.out_dir"
                )
            acc.load_state(str(state_dir))
        except (json.JSONDecodeError, KeyError, RuntimeError, OSError, ValueError) as e:
            raise LyricdistError(
                f"resumable state in {state_dir} is corrupted or does not match this model "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); start a new train.out_dir"
            ) from None
        self.step = int(info["step"])
        self.best_val = float("inf") if info.get("best_val_loss") is None else float(info["best_val_loss"])
        rnn = self.acc.unwrap_model(self.model).rnn
        full = {}
        for name in (RNN_FP32_FILE, "model.safetensors"):  # states written before RNN_FP32_FILE hold fp32 models
            if not full and (state_dir / name).is_file():
                full = {k: v for k, v in load_file(str(state_dir / name)).items() if k.startswith("rnn.")}
        with torch.no_grad():
            for name, p in rnn.named_parameters():
                target = self.masters.master_of(p) if self.masters else p
                target.copy_(full.get(f"rnn.{name}", p))  # never leave a master at its fresh initialisation
        if self.masters:
            self.masters.to_model()
        rnn.flatten_parameters()
        if info.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(info["grad_scaler"])
        # Hidden states of all saved processes, re-split for this world size (streams are global).
        parts = [load_file(str(state_dir / f"hidden_{r}.safetensors")) for r in range(info["num_processes"])]
        if parts and parts[0]:
            full = [torch.cat([p[f"h{i}"] for p in parts], dim=1) for i in range(len(parts[0]))]
            lo, hi = self.batches.streams[0], self.batches.streams[-1] + 1
            self.state = tuple(h[:, lo:hi].to(acc.device, self.precision.rnn_dtype) for h in full)
        if info["num_processes"] != acc.num_processes:
            acc.print(f"warning: resumed with {acc.num_processes} processes (saved with {info['num_processes']})")
        acc.print(f"resumed from {state_dir} at step {self.step}: {EXACTNESS[acc.device.type == 'cuda']}")
        return info.get("wandb_run_id")

    # ---- evaluation and samples ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
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
        loss = total.item() / self.val.n_targets  # every real target of the split, over all processes
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}

    def default_primetexts(self) -> list[str]:
        if self.cfg.samples.primetexts:
            return list(self.cfg.samples.primetexts)
        tokens = self.corpus.tokens("val")
        if len(tokens) == 0:
            tokens = self.corpus.tokens("train")
        head = self.vocab.decode(np.asarray(tokens[:400]))
        lines = [l for l in head.split("\n") if l.strip()]
        return [lines[0][:60] + "\n"] if lines else ["\n"]

    def samples(self) -> list[dict]:
        """Progress samples. An artist-conditioned model writes as each of its artists (up to SAMPLE_ARTISTS of
        them; more are represented by their mean embedding), and each row says which."""
        s = self.cfg.samples
        model = self.acc.unwrap_model(self.model)
        gen = torch.Generator().manual_seed(s.seed + self.step)
        voices: list[tuple[str | None, torch.Tensor | None]] = [(None, None)]
        if model.artist_embed is not None:
            table = model.artist_embed.weight.detach()
            names = list(self.corpus.artists)[: model.num_artists] or ["artist 0"]
            if len(names) <= SAMPLE_ARTISTS:
                voices = [(name, table[i]) for i, name in enumerate(names)]
            else:
                voices = [(f"mean of {len(names)} artists", table[: len(names)].mean(0))]
        rows = []
        for prime in self.default_primetexts():
            text = prime.lower() if self.vocab.lowercase else prime
            ids = self.vocab.encode("".join(c for c in text if c in self.vocab))
            for artist, vec in voices:
                with self.precision.autocast(self.acc.device):
                    outs = generate(model, ids, s.length, s.temperatures, generator=gen, artist_vec=vec)
                for temp, o in zip(s.temperatures, outs):
                    row = {"step": self.step, "primetext": prime, "temperature": temp, "text": self.vocab.decode(o)}
                    rows.append(row if artist is None else {**row, "artist": artist})
        return rows

    # ---- the loop -----------------------------------------------------------------------------------
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

    def fit(self) -> dict:
        from tqdm.auto import tqdm

        t, acc = self.cfg.train, self.acc
        save_every = t.save_every or t.eval_every
        bar = tqdm(
            total=t.max_steps,
            initial=self.step,
            disable=not acc.is_main_process,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30,  # keep batch-job logs short
        )
        window_nll = torch.zeros((), device=acc.device)
        window_targets, window_steps, window_start = 0, 0, time.perf_counter()
        last_metrics: dict = {}
        self.model.train()
        self._catch_signals()
        first_step, started = self.step, time.perf_counter()
        try:
            while self.step < t.max_steps:
                nll, n_targets, grad_norm = self.train_step()
                window_nll += nll
                window_targets += n_targets
                window_steps += 1
                bar.update(1)
                if self.step == first_step + STOP_CALIBRATION_STEPS:
                    self._calibrate_stop_checks((time.perf_counter() - started) / STOP_CALIBRATION_STEPS)
                if (self.step % t.eval_every == 0) and self.step < t.max_steps:
                    self._stop_if_requested(saved=False, now=True)  # an evaluation must not eat the shutdown grace
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    elapsed = time.perf_counter() - window_start
                    train_loss = acc.reduce(window_nll, "sum").item() / max(window_targets, 1)
                    metrics = {
                        "train_loss": train_loss,
                        "chars_per_sec": window_targets / max(elapsed, 1e-9),  # real characters, all processes
                        "lr": self.lr,
                        "grad_norm": float(grad_norm),
                        "epoch": self.step / self.batches.chunks_per_epoch,
                    }
                    if torch.cuda.is_available() and acc.device.type == "cuda":
                        metrics["gpu_mem_gb"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
                    if self.step % t.eval_every == 0 or self.step == t.max_steps:
                        metrics.update(self.evaluate())
                    self.tracker.log(metrics, self.step)
                    last_metrics = metrics
                    bar.set_postfix(loss=f"{train_loss:.4f}", chars_s=f"{metrics['chars_per_sec']:,.0f}")
                    window_nll = torch.zeros((), device=acc.device)
                    window_targets, window_steps, window_start = 0, 0, time.perf_counter()
                    if "val_loss" in metrics:
                        self.on_evaluation(metrics)
                elif self.step % t.eval_every == 0:
                    metrics = self.evaluate()
                    self.tracker.log(metrics, self.step)
                    self.on_evaluation(metrics)
                saved = self.step % save_every == 0 or self.step == t.max_steps
                if saved:
                    self._save_state()
                if self.step < t.max_steps:
                    self._stop_if_requested(saved)
        finally:
            bar.close()
            self._restore_signals()
        if acc.is_main_process and not (self.out / "checkpoints" / "last").exists():
            self._save_portable("last", last_metrics)
        self.tracker.finish()
        return last_metrics

    # ---- stopping on a signal: SIGTERM (preemption, scancel, torchrun shutdown), SIGUSR1 (SLURM time limit), ^C --
    def _catch_signals(self) -> None:
        self._stop_signal = None
        self._agree_every = self.cfg.train.log_every
        self._previous_handlers = {}
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            if self._stop_signal == signal.SIGINT and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second ^C: stop now
            self._stop_signal = signum

        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers = {}

    def _calibrate_stop_checks(self, seconds_per_step: float) -> None:
        """With several processes, agree on a stop every k steps, k chosen (the same on every process, from the mean
        step time) so that at most train.stop_check_seconds of training pass between agreements."""
        if self.acc.num_processes == 1:
            return
        mean = self.acc.reduce(torch.tensor(seconds_per_step, device=self.acc.device), "mean").item()
        t = self.cfg.train
        self._agree_every = max(1, min(t.log_every, int(t.stop_check_seconds / max(mean, 1e-9))))

    def _stop_if_requested(self, saved: bool, now: bool = False) -> None:
        if not self._stop_requested(now):
            return
        name = signal.Signals(self._stop_signal or signal.SIGTERM).name
        self.acc.print(f"\n{name}: saving resumable state at step {self.step}; continue with --resume")
        if not saved:
            self._save_state()
        raise TrainingStopped(self._stop_signal or signal.SIGTERM)

    def _stop_requested(self, now: bool = False) -> bool:
        """Whether any process got a stop signal. Several processes agree (one all-reduce) every few steps (see
        _calibrate_stop_checks; log steps until calibrated) and before each evaluation (`now`)."""
        if self.acc.num_processes == 1:
            return self._stop_signal is not None
        if not now and self.step % self._agree_every:
            return False
        flag = torch.tensor(float(self._stop_signal is not None), device=self.acc.device)
        return self.acc.reduce(flag, "sum").item() > 0

    def on_evaluation(self, metrics: dict) -> None:
        """Samples, `last` and (if improved) `best` checkpoints: main process only."""
        if not self.acc.is_main_process:
            return
        if self.cfg.samples.enabled:
            self.tracker.log_samples(self.samples(), self.step)
        aliases = ["latest"]
        self._save_portable("last", metrics)
        val = metrics.get("val_loss")
        if val is not None and val < self.best_val:
            self.best_val = val
            self._save_portable("best", metrics)
            aliases.append("best")
        self.tracker.log_checkpoint(
            self.out / "checkpoints" / ("best" if "best" in aliases else "last"),
            aliases,
            {"step": self.step, "val_loss": val},
        )

    def _save_portable(self, name: str, metrics: dict) -> None:
        save_checkpoint(
            self.out / "checkpoints" / name,
            self.acc.unwrap_model(self.model),
            self.vocab,
            state=full_precision_state(self.acc.unwrap_model(self.model), self.masters),
            artists=self.corpus.artists,
            step=self.step,
            val_loss=metrics.get("val_loss"),
            train_loss=metrics.get("train_loss"),
            corpus=str(self.cfg.data.corpus),
            train=asdict(self.cfg.train),
        )


class TrainingStopped(Exception):
    """Training stopped on a signal after saving its resumable state."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def train(cfg: RunConfig, resume: bool = False) -> dict:
    """Train per `cfg`; returns the last logged metrics."""
    trainer = Trainer(cfg, resume=resume)
    return trainer.fit()


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
