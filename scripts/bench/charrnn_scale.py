"""char-rnn at Bollywood scale: one epoch of the 3 x 300 preset, lyricdist's trainer vs a plain PyTorch loop.

    lyricdist prepare ../shared/data/giitaayan-isb.tar.gz --out corpus/bollywood
    python scripts/bench/charrnn_scale.py --corpus corpus/bollywood --steps 30

Uses the measurement of scripts/bench/train_throughput.py (same two implementations, each in its own
subprocess) with configs/bollywood-charrnn.yaml: chars/s, seconds per epoch and peak memory. Seconds per epoch
are EXTRAPOLATED from --steps timed steps (steps per epoch = train characters / (batch x seq_len)). On CPU:
batch 50 fp32; with a GPU: fp32 and bf16 at batch 50 and at --large-batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import REPO, measure  # noqa: E402

CONFIG = REPO / "configs" / "bollywood-charrnn.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="corpus/bollywood", help="a `lyricdist prepare` output of the giitaayan archive")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (extrapolated to an epoch)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--large-batch", type=int, default=1024, help="the large batch measured on a GPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8), help="torch CPU threads")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if not (Path(args.corpus) / "meta.json").is_file():
        raise SystemExit(
            f"{args.corpus} is not a prepared corpus; run "
            f"`lyricdist prepare ../shared/data/giitaayan-isb.tar.gz --out {args.corpus}`"
        )
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        cases = [(d, b) for b in (50, args.large_batch) for d in ("fp32", "bf16")]
        where = torch.cuda.get_device_name()
    else:
        cases, where = [("fp32", 50)], f"CPU, {args.threads} torch threads"
    meta = json.loads((Path(args.corpus) / "meta.json").read_text())
    print(f"corpus {args.corpus}: {meta['splits']['train']['chars']:,} train chars, vocab {meta['vocab_size']}; "
          f"device {where}; {args.steps} timed steps after {args.warmup} warm-up, epoch time extrapolated")
    header = (f"{'device':6} {'dtype':5} {'batch':>5} | {'lyricdist chars/s':>17} {'plain chars/s':>13} {'ratio':>6} | "
              f"{'epoch s (ld)':>12} {'epoch s (plain)':>15} | {'peak MB (ld)':>12} {'peak MB (plain)':>15}")
    print(header)
    print("-" * len(header))
    rows = []
    for dtype, batch in cases:
        common = (CONFIG, args.corpus, device, dtype, batch, args.steps, args.warmup, args.threads)
        ld, pl = measure("lyricdist", *common), measure("plain", *common)
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
