"""char-rnn at Bollywood scale: lyricdist's Trainer step vs a plain PyTorch loop, 3 x 300 LSTM.

Both train configs/bollywood-charrnn.yaml's model (one-hot input, 3 x 300 LSTM, RMSprop 2e-3, clip 5, seq 50)
on a corpus prepared from the giitaayan archive:

    lyricdist prepare ../shared/data/giitaayan-isb.tar.gz --out corpus/bollywood
    python scripts/bench/charrnn_scale.py --corpus corpus/bollywood --steps 30

  lyricdist  `Trainer.train_step()`: contiguous streams, state carried across chunks and reset at song starts,
             batches sliced from the memmap (accelerate handles device and autocast).
  plain      the usual hand-written loop: random windows, zero state every batch, Python-side batching
             (one numpy slice per stream, then torch.stack), autocast for bf16.

Each measurement runs --steps timed steps after --warmup steps in its own subprocess, so peak memory is that
run's alone (CPU: max RSS; CUDA: torch.cuda.max_memory_allocated). Seconds per epoch are EXTRAPOLATED from
those steps: steps per epoch = train characters / (batch x seq_len). On CPU the default is batch 50 fp32; with
a GPU: fp32 and bf16 at batch 50 and at --large-batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "bollywood-charrnn.yaml"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_lyricdist(corpus: str, device: str, dtype: str, batch: int, steps: int, warmup: int) -> dict:
    from lyricdist.train import Trainer, load_config

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            str(CONFIG),
            [
                f"--data.corpus={corpus}",
                f"--train.out_dir={out}",
                f"--train.batch_size={batch}",
                f"--train.cpu={'true' if device == 'cpu' else 'false'}",
                f"--train.mixed_precision={'bf16' if dtype == 'bf16' else 'no'}",
                "--tracking.backend=none",
                "--samples.enabled=false",
            ],
        )
        trainer = Trainer(cfg)
        for _ in range(warmup):
            trainer.train_step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer.train_step()
        loss = float(loss)
        _sync(device)
        seconds = time.perf_counter() - t0
        chunks_per_epoch = trainer.batches.chunks_per_epoch
    return {"seconds": seconds, "steps_per_epoch": chunks_per_epoch, "loss": loss}


def run_plain(corpus: str, device: str, dtype: str, batch: int, steps: int, warmup: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from lyricdist.data import Corpus

    c = Corpus(corpus)
    tokens = c.tokens("train")
    vocab, seq = len(c.vocab), 50
    torch.manual_seed(0)

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(vocab, 300, num_layers=3, batch_first=True)
            self.head = nn.Linear(300, vocab)

        def forward(self, x):
            out, _ = self.lstm(F.one_hot(x, vocab).float())  # zero state every batch
            return self.head(out)

    model = Plain().to(device)
    opt = torch.optim.RMSprop(model.parameters(), lr=2e-3, alpha=0.95, eps=1e-8)
    rng = np.random.default_rng(0)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> torch.Tensor:
        offsets = rng.integers(0, len(tokens) - seq - 1, size=batch)
        windows = torch.stack([torch.from_numpy(tokens[o : o + seq + 1].astype(np.int64)) for o in offsets])
        windows = windows.to(device)
        x, y = windows[:, :-1], windows[:, 1:]
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss = float(loss)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps_per_epoch": len(tokens) // (batch * seq), "loss": loss}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    run = run_lyricdist if args.impl == "lyricdist" else run_plain
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = run(args.corpus, args.device, args.dtype, args.batch, args.steps, args.warmup)
    chars = args.steps * args.batch * 50
    r.update(
        chars_per_s=chars / r["seconds"],
        epoch_s=r["seconds"] / args.steps * r["steps_per_epoch"],
        peak_mb=_peak_mb(args.device),
    )
    print("RESULT " + json.dumps(r))


def measure(args, impl: str, device: str, dtype: str, batch: int) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", "--impl", impl, "--device", device, "--dtype", dtype,
        "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--corpus", args.corpus, "--threads", str(args.threads),
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{impl} {device} {dtype} batch {batch} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="corpus/bollywood", help="a `lyricdist prepare` output of the giitaayan archive")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (extrapolated to an epoch)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--large-batch", type=int, default=1024, help="the large batch measured on a GPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8), help="torch CPU threads")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["lyricdist", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=50, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if not (Path(args.corpus) / "meta.json").is_file():
        raise SystemExit(
            f"{args.corpus} is not a prepared corpus; run "
            f"`lyricdist prepare ../shared/data/giitaayan-isb.tar.gz --out {args.corpus}`"
        )
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        cases = [(d, b) for b in (50, args.large_batch) for d in ("fp32", "bf16")]
        gpu = torch.cuda.get_device_name()
    else:
        cases, gpu = [("fp32", 50)], f"CPU, {args.threads} torch threads"
    meta = json.loads((Path(args.corpus) / "meta.json").read_text())
    print(f"corpus {args.corpus}: {meta['splits']['train']['chars']:,} train chars, vocab {meta['vocab_size']}; "
          f"device {gpu}; {args.steps} timed steps after {args.warmup} warm-up, epoch time extrapolated")
    header = (f"{'device':6} {'dtype':5} {'batch':>5} | {'lyricdist chars/s':>17} {'plain chars/s':>13} {'ratio':>6} | "
              f"{'epoch s (ld)':>12} {'epoch s (plain)':>15} | {'peak MB (ld)':>12} {'peak MB (plain)':>15}")
    print(header)
    print("-" * len(header))
    rows = []
    for dtype, batch in cases:
        ld = measure(args, "lyricdist", device, dtype, batch)
        pl = measure(args, "plain", device, dtype, batch)
        rows.append({"device": device, "dtype": dtype, "batch": batch, "lyricdist": ld, "plain": pl})
        print(f"{device:6} {dtype:5} {batch:>5} | {ld['chars_per_s']:>17,.0f} {pl['chars_per_s']:>13,.0f} "
              f"{ld['chars_per_s'] / pl['chars_per_s']:>5.2f}x | {ld['epoch_s']:>12,.0f} {pl['epoch_s']:>15,.0f} | "
              f"{ld['peak_mb']:>12,.0f} {pl['peak_mb']:>15,.0f}", flush=True)
    print("ratio = lyricdist chars/s / plain chars/s (>1: lyricdist faster). Peak MB: CPU max RSS of the whole "
          "process (incl. the interpreter and libraries), CUDA max allocated.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
