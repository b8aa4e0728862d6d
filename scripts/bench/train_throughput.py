"""Training throughput: lyricdist's trainer step vs the plain PyTorch loop a user would write, side by side.

    python scripts/bench/train_throughput.py                      # both presets, on the demo corpus
    python scripts/bench/train_throughput.py --corpus corpus/x --presets lstm-4x256 --steps 50

  lyricdist  `Trainer.train_step()`: contiguous streams memory-mapped from the corpus, hidden state carried
             across chunks (reset at song starts), accelerate for device and autocast, grad clipping. Its chars/s
             counts only real characters (songs are padded to chunk boundaries; padding is not counted).
  plain      the usual hand-written loop: random windows, zero state every batch, Python-side batching
             (one numpy slice per row, then torch.stack), same model shape, optimizer and clipping.

Same preset, batch and device in both; each measurement runs in its own subprocess so peak memory is its own
(CPU: max RSS; CUDA: torch.cuda.max_memory_allocated). On a GPU both fp32 and bf16 are measured.
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
PRESETS = {"lstm-4x256": REPO / "configs" / "lstm-4x256.yaml", "base-1x128": REPO / "configs" / "base-1x128.yaml"}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(step, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - t0


def _config(config: Path, corpus: str, out: str, device: str, dtype: str, batch: int | None):
    from lyricdist.train import load_config

    args = [f"--data.corpus={corpus}", f"--train.out_dir={out}", f"--train.cpu={'true' if device == 'cpu' else 'false'}",
            f"--train.mixed_precision={'bf16' if dtype == 'bf16' else 'no'}", "--tracking.backend=none",
            "--samples.enabled=false"]
    if batch:
        args.append(f"--train.batch_size={batch}")
    return load_config(str(config), args)


def run_lyricdist(config: Path, corpus: str, device: str, dtype: str, batch: int | None, steps: int, warmup: int):
    from lyricdist.train import Trainer

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(_config(config, corpus, out, device, dtype, batch))
        real = []  # characters actually trained on: song-alignment padding is not counted

        def step() -> None:
            real.append(trainer.train_step()[1])

        seconds = _timed(step, steps, warmup, device)
        return {"seconds": seconds, "chars_per_step": sum(real[warmup:]) / steps,
                "steps_per_epoch": trainer.batches.chunks_per_epoch}


def run_plain(config: Path, corpus: str, device: str, dtype: str, batch: int | None, steps: int, warmup: int):
    import numpy as np
    import torch
    import torch.nn.functional as F

    from lyricdist.data import Corpus
    from lyricdist.model import CharRNN

    with tempfile.TemporaryDirectory() as out:
        cfg = _config(config, corpus, out, device, dtype, batch)
    t = cfg.train
    prepared = Corpus(corpus)
    tokens = prepared.tokens("train")
    torch.manual_seed(0)
    model = CharRNN(cfg.model, len(prepared.vocab)).to(device)
    from lyricdist.train import make_optimizer

    opt = make_optimizer(model, t)
    rng = np.random.default_rng(0)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        offsets = rng.integers(0, len(tokens) - t.seq_len - 1, size=t.batch_size)
        windows = torch.stack([torch.from_numpy(tokens[o : o + t.seq_len + 1].astype(np.int64)) for o in offsets])
        windows = windows.to(device)
        with autocast:
            logits, _ = model(windows[:, :-1])  # state starts at zero every batch
        loss = F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()

    return {"seconds": _timed(step, steps, warmup, device), "chars_per_step": t.batch_size * t.seq_len,
            "steps_per_epoch": len(tokens) // (t.batch_size * t.seq_len)}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = run_lyricdist if args.impl == "lyricdist" else run_plain
    r = run(Path(args.config), args.corpus, args.device, args.dtype, args.batch, args.steps, args.warmup)
    r.update(
        chars_per_s=args.steps * r["chars_per_step"] / r["seconds"],
        epoch_s=r["seconds"] / args.steps * r["steps_per_epoch"],
        peak_mb=_peak_mb(args.device),
    )
    print("RESULT " + json.dumps(r))


def measure(impl: str, config: Path, corpus: str, device: str, dtype: str, batch: int | None, steps: int,
            warmup: int, threads: int) -> dict:
    """One measurement in a fresh subprocess (so peak memory is its own)."""
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--config", str(config), "--device", device,
           "--dtype", dtype, "--steps", str(steps), "--warmup", str(warmup), "--corpus", corpus,
           "--threads", str(threads)] + (["--batch", str(batch)] if batch else [])
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{impl} {config.name} {dtype} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=None, help="a prepared corpus (default: the demo corpus, prepared to a temp dir)")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=None, help="override the presets' batch size")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["lyricdist", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = None
    if args.corpus is None:
        from lyricdist.prepare import prepare

        tmp = tempfile.TemporaryDirectory()
        args.corpus = str(Path(tmp.name) / "demo")
        prepare(["demo"], args.corpus, quiet=True)
    dtypes = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} torch threads"
    print(f"corpus {args.corpus}; device {where}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'preset':11} {'dtype':5} | {'lyricdist chars/s':>17} {'plain chars/s':>13} {'ratio':>6} | "
          f"{'peak MB (ld)':>12} {'peak MB (plain)':>15}")
    for name in args.presets:
        for dtype in dtypes:
            common = (PRESETS[name], args.corpus, args.device, dtype, args.batch, args.steps, args.warmup, args.threads)
            ld, pl = measure("lyricdist", *common), measure("plain", *common)
            print(f"{name:11} {dtype:5} | {ld['chars_per_s']:17,.0f} {pl['chars_per_s']:13,.0f} "
                  f"{ld['chars_per_s'] / pl['chars_per_s']:5.2f}x | {ld['peak_mb']:12,.0f} {pl['peak_mb']:15,.0f}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
