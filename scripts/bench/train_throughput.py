"""Training throughput: lyricdist's trainer step against a competent plain PyTorch loop, side by side in one run.

    python scripts/bench/train_throughput.py                       # CPU: each preset's own batch
    python scripts/bench/train_throughput.py --regimes all         # GPU: also 1024x100 and 4096x200
    python scripts/bench/train_throughput.py --corpus corpus/x     # a real prepared corpus instead

Arms (same model shape, batch, seq_len, optimizer (Adam), clipping and device; each in its own subprocess so its
peak memory is its own):
  lyricdist:auto  `Trainer.train_step()` with train.mixed_precision=auto: song-aligned streams whose batches were
                  built once on the device, carried state, the RNN in the dtype its fused kernel takes
  lyricdist:no    the same in fp32 (TF32 on a GPU)                     [GPU, and CPUs where auto is bf16]
  plain:fp32      scripts/bench/plain_loop.py: nn.LSTM, tokens on the device once, one randint gather a batch
  plain:bf16      the plain loop under bf16 autocast                   [CPUs with native bf16]
  plain:tf32 / plain:fp16   the plain loop with TF32, and with fp16 autocast + GradScaler         [GPU only]

Corpus: a synthetic one of --corpus-chars characters (default 50 M, written memory-mapped to a temp dir, songs of
800-3,200 characters) or a prepared corpus given with --corpus. Both arms count the same thing: the B x T positions
a step runs through the model. `scored` is the share of them that are real targets: 1 for the plain loop's random
windows, below 1 for lyricdist by its song-alignment padding (so chars/s x scored = real characters learned/s).

Columns: chars/s (median of --repeats runs, arms interleaved; >= 200 timed steps after 20 of warm-up by default,
so that a run lasts seconds even for small batches on a GPU); ratio = this arm / the best plain arm of the
regime; same = this arm / the plain arm of the same width (16 or 32 bit); peak memory (CUDA: max allocated; CPU:
max RSS of the whole process); host syncs per step (Python-level reads of tensor values, and on CUDA also
torch.cuda's sync debug mode); the RNN kernel the profiler saw in one step; FLOP share = chars/s x FLOP per
character (forward + backward, 3 x the forward matmuls) / a matmul ceiling measured in the same dtype on the
same device in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
PRESETS = {"charrnn-3x300": REPO / "configs" / "charrnn-3x300.yaml", "lstm-4x256": REPO / "configs" / "lstm-4x256.yaml"}
# name: (preset, batch, seq_len); the first two are the presets' own batches
REGIMES = {
    "3x300@50x50": ("charrnn-3x300", 50, 50),
    "4x256@128x40": ("lstm-4x256", 128, 40),
    "4x256@1024x100": ("lstm-4x256", 1024, 100),
    "4x256@4096x200": ("lstm-4x256", 4096, 200),
}
OWN = ["3x300@50x50", "4x256@128x40"]
SYNC_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__")


# ---- measurement helpers (run inside a worker) --------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def count_syncs(step, n: int, device) -> float:
    """Host syncs per step over n steps: Python reads of tensor values (outside torch.optim's CPU step counters)
    plus, on CUDA, the syncs torch.cuda's sync debug mode reports."""
    import torch

    seen = []

    def spy(name, original):
        def wrapper(self, *a, **k):
            if "torch/optim" not in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                seen.append(name)
            return original(self, *a, **k)

        return wrapper

    originals = {name: getattr(torch.Tensor, name) for name in SYNC_READS}
    for name, fn in originals.items():
        setattr(torch.Tensor, name, spy(name, fn))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            for _ in range(n):
                step()
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
                _sync(device)
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
    cuda_syncs = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
    return (len(seen) + cuda_syncs) / n


def rnn_kernels(step, device) -> str:
    """The RNN ops and kernels one step ran, from the profiler: aten op first, then device kernels by time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
        _sync(device)
    events = [e for e in prof.key_averages() if re.search(r"rnn|lstm", e.key, re.I)
              and not re.search(r"backward|autograd", e.key, re.I) and e.key != "aten::lstm"]
    aten = sorted({e.key.removeprefix("aten::") for e in events if e.key.startswith("aten::")})
    kernels = sorted((e for e in events if not e.key.startswith("aten::")),
                     key=lambda e: -getattr(e, "device_time_total", 0))
    names = aten + [k.key[:48] for k in kernels[:1]]
    return " + ".join(names) if names else "no fused RNN op"


def matmul_ceiling(dtype_name: str, device) -> float:
    """FLOP/s of a large square matmul in this dtype on this device: the ceiling the FLOP share is measured against."""
    import torch

    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    n = 8192 if device.type == "cuda" else 1024
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype_name == "tf32"
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    per_round = 10 if device.type == "cuda" else 1  # a GPU queues a round, then one sync reads the clock
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < 0.5:
        for _ in range(per_round):
            a @ b
        reps += per_round
        _sync(device)
    torch.backends.cuda.matmul.allow_tf32 = prev
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_char(vocab: int, hidden: int, layers: int, embedding_dim: int = 0) -> float:
    """Forward + backward matmul FLOP per character (backward ~ 2 x forward): ~12 M for 4 x 256 over ~100 chars."""
    inp = embedding_dim or vocab
    fwd = 2 * 4 * hidden * (inp + hidden) + (layers - 1) * 2 * 4 * hidden * 2 * hidden + 2 * hidden * vocab
    return 3.0 * fwd


# ---- the arms ----------------------------------------------------------------------------------------------------
def build_lyricdist(config: Path, corpus: str, device: str, precision: str, batch: int, seq_len: int, out: str):
    from lyricdist.train import Trainer, load_config

    cfg = load_config(str(config), [
        f"--data.corpus={corpus}", f"--train.out_dir={out}", f"--train.cpu={'true' if device == 'cpu' else 'false'}",
        f"--train.mixed_precision={precision}", f"--train.batch_size={batch}", f"--train.seq_len={seq_len}",
        "--train.optimizer=adam", "--train.lr_schedule=constant", "--train.warmup_steps=0",
        "--tracking.backend=none", "--samples.enabled=false",
    ])
    trainer = Trainer(cfg)
    real: list[int] = []

    def step() -> None:
        real.append(trainer.train_step().items)

    m = cfg.model
    info = {"precision": trainer.precision.name, "dtype": trainer.precision.name if trainer.precision.low_precision
            else ("tf32" if trainer.acc.device.type == "cuda" else "fp32"),
            "shape": (len(trainer.vocab), m.hidden_size, m.num_layers, m.embedding_dim),
            "scored": lambda: sum(real) / max(len(real), 1) / (batch * seq_len)}
    return step, (lambda: batch * seq_len), trainer.acc.device, info


def build_plain(config: Path, corpus: str, device: str, variant: str, batch: int, seq_len: int, out: str):
    import torch

    from lyricdist.data import Corpus
    from lyricdist.train import load_config
    from plain_loop import PlainLoop

    cfg = load_config(str(config), [f"--data.corpus={corpus}", f"--train.out_dir={out}"])
    prepared = Corpus(corpus)
    m = cfg.model
    dev = torch.device(device)
    loop = PlainLoop(np.asarray(prepared.tokens("train")), len(prepared.vocab), m.hidden_size, m.num_layers, batch,
                     seq_len, dev, variant=variant, lr=cfg.train.lr, grad_clip=cfg.train.grad_clip,
                     dropout=m.dropout, embedding_dim=m.embedding_dim)
    info = {"precision": variant, "dtype": variant, "shape": (len(prepared.vocab), m.hidden_size, m.num_layers,
                                                               m.embedding_dim), "scored": lambda: 1.0}
    return loop.step, (lambda: loop.chars_per_step), dev, info


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    arm, variant = args.arm.split(":")
    with tempfile.TemporaryDirectory() as out:
        build = build_lyricdist if arm == "lyricdist" else build_plain
        step, chars_per_step, device, info = build(Path(args.config), args.corpus, args.device, variant, args.batch,
                                                   args.seq_len, out)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        seconds = time.perf_counter() - t0
        chars = chars_per_step() * args.steps / seconds
        peak = _peak_mb(device)
        syncs = count_syncs(step, max(2, min(args.steps, 5)), device)
        kernel = rnn_kernels(step, device)
        ceiling = matmul_ceiling(info["dtype"], device)
    share = chars * flops_per_char(*info["shape"]) / ceiling
    print("RESULT " + json.dumps({"chars_per_s": chars, "peak_mb": peak, "syncs_per_step": syncs, "kernel": kernel,
                                  "flop_share": share, "ceiling_tflops": ceiling / 1e12,
                                  "precision": info["precision"], "scored": info["scored"](),
                                  "steps": args.steps}))


def measure(arm: str, config: Path, corpus: str, device: str, batch: int, seq_len: int, steps: int, warmup: int,
            threads: int) -> dict:
    """One arm in a fresh subprocess (its own peak memory, its own torch state); arm is e.g. 'plain:fp16'."""
    cmd = [sys.executable, __file__, "--worker", "--arm", arm, "--config", str(config), "--corpus", corpus,
           "--device", device, "--batch", str(batch), "--seq-len", str(seq_len), "--steps", str(steps),
           "--warmup", str(warmup), "--threads", str(threads)]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{arm} ({config.name}, {batch}x{seq_len}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def measure_arms(arms: list[str], config: Path, corpus: str, device: str, batch: int, seq_len: int, steps: int,
                 warmup: int, threads: int, repeats: int) -> dict[str, dict]:
    """Each arm `repeats` times, the arms interleaved (a slow spell of a shared machine hits every arm alike); the
    run with the median chars/s of each arm."""
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for _ in range(repeats):
        for arm in arms:
            runs[arm].append(measure(arm, config, corpus, device, batch, seq_len, steps, warmup, threads))
    return {arm: sorted(rs, key=lambda r: r["chars_per_s"])[len(rs) // 2] for arm, rs in runs.items()}


def synthetic_corpus(out: Path, chars: int, vocab_size: int = 96, seed: int = 0) -> Path:
    """A prepared corpus of random characters in songs of 800-3,200 characters (1% of the songs held out)."""
    from lyricdist.fileio import atomic_write_json
    from lyricdist.corpus_format import CORPUS_FORMAT, CORPUS_VERSION
    from lyricdist.vocab import Vocab

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    lengths = rng.integers(800, 3200, size=chars // 800 + 2)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), chars)) + 1]
    n_val = max(1, len(lengths) // 100)
    splits = {"train": lengths[n_val:], "val": lengths[:n_val]}
    meta_splits = {}
    for split, lens in splits.items():
        n = int(lens.sum())
        arr = np.memmap(out / f"{split}.bin", dtype=np.uint8, mode="w+", shape=(n,))
        for lo in range(0, n, 1 << 24):
            arr[lo : lo + (1 << 24)] = rng.integers(0, vocab_size, size=min(1 << 24, n - lo), dtype=np.uint8)
        arr.flush()
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        np.save(out / f"{split}_docs.npy", np.stack([starts, np.zeros_like(starts)], axis=1).astype(np.int64))
        meta_splits[split] = {"chars": n, "docs": len(lens)}
    atomic_write_json(out / "vocab.json", Vocab([chr(32 + i) for i in range(vocab_size)]).to_json())
    atomic_write_json(out / "meta.json", {"format": CORPUS_FORMAT, "version": CORPUS_VERSION, "dtype": "uint8",
                                          "vocab_size": vocab_size, "lowercase": False, "artists": ["synthetic"],
                                          "splits": meta_splits})
    return out


def _width(precision: str) -> int:
    return 16 if precision in ("bf16", "fp16") else 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=None, help="a prepared corpus (default: a synthetic one, see --corpus-chars)")
    p.add_argument("--corpus-chars", type=float, default=50e6, help="size of the synthetic corpus")
    p.add_argument("--regimes", nargs="+", default=None,
                   help=f"'own' (the presets' own batches), 'all', or names from {list(REGIMES)}; "
                        f"default: own on a CPU, all on a GPU")
    p.add_argument("--steps", type=int, default=200, help="timed steps per arm (at least 200 for a real figure)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3,
                   help="measure each arm this many times, arms interleaved, and report the median chars/s")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8))
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device == "cuda"
    regimes = args.regimes or (["all"] if gpu else ["own"])
    regimes = list(REGIMES) if regimes == ["all"] else OWN if regimes == ["own"] else regimes
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        raise SystemExit(f"unknown regime(s) {unknown}; choose from {list(REGIMES)}, 'own' or 'all'")
    from lyricdist.precision import native_bf16

    if gpu:
        arms = ["lyricdist:auto", "lyricdist:no", "plain:tf32", "plain:fp16"]
    elif native_bf16(torch.device("cpu")):  # auto is bf16 here: measure both precisions of both loops
        arms = ["lyricdist:auto", "lyricdist:no", "plain:fp32", "plain:bf16"]
    else:
        arms = ["lyricdist:auto", "plain:fp32"]
    tmp = None
    if args.corpus is None:
        tmp = tempfile.TemporaryDirectory()
        args.corpus = str(synthetic_corpus(Path(tmp.name) / "synthetic", int(args.corpus_chars)))
    meta = json.loads((Path(args.corpus) / "meta.json").read_text())
    where = torch.cuda.get_device_name() if gpu else f"CPU, {args.threads} torch threads"
    print(f"corpus {args.corpus} ({meta['splits']['train']['chars']:,} train chars, vocab {meta['vocab_size']}); "
          f"device {where}; torch {torch.__version__}; {args.steps} timed steps after {args.warmup} warm-up, "
          f"median of {args.repeats} interleaved runs")
    header = (f"{'regime':15} {'arm':15} {'rnn':4} | {'chars/s':>12} {'ratio':>6} {'same':>6} {'scored':>6} | "
              f"{'peak MB':>8} | {'syncs/step':>10} | {'FLOP share':>10} | RNN kernel")
    print(header + "\n" + "-" * len(header), flush=True)
    rows = []
    for name in regimes:
        preset, batch, seq_len = REGIMES[name]
        results = measure_arms(arms, PRESETS[preset], args.corpus, args.device, batch, seq_len, args.steps,
                               args.warmup, args.threads, args.repeats)
        plain = {a: r for a, r in results.items() if a.startswith("plain")}
        best_plain = max(r["chars_per_s"] for r in plain.values())
        for arm, r in results.items():
            same = [p["chars_per_s"] for p in plain.values() if _width(p["precision"]) == _width(r["precision"])]
            r.update(regime=name, arm=arm, ratio=r["chars_per_s"] / best_plain,
                     ratio_same=r["chars_per_s"] / max(same) if same else float("nan"))
            rows.append(r)
            print(f"{name:15} {arm:15} {r['precision']:4} | {r['chars_per_s']:12,.0f} {r['ratio']:5.2f}x "
                  f"{r['ratio_same']:5.2f}x {r['scored']:6.1%} | "
                  f"{r['peak_mb']:8,.0f} | {r['syncs_per_step']:10.1f} | {r['flop_share']:9.1%} | {r['kernel']}",
                  flush=True)
    print("chars/s: B x T positions per second for every arm; ratio: over the best plain arm of the regime (>1: "
          "faster); same: over the plain arm of the same width (16 or 32 bit); scored: the share of positions that "
          "are real targets (lyricdist pads songs to whole chunks). FLOP share: against a matmul ceiling measured "
          "here in the arm's dtype.")
    if args.steps < 200:
        print(f"note: {args.steps} timed steps (< 200): a smoke run, not a figure to quote")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
