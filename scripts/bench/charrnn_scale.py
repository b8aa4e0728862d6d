"""char-rnn at Bollywood scale: one epoch of the 3 x 300 preset, lyricdist's trainer vs a plain PyTorch loop.

    lyricdist prepare ../shared/data/giitaayan-isb.tar.gz --out corpus/bollywood
    python scripts/bench/charrnn_scale.py --corpus corpus/bollywood --steps 30

Uses the measurement of scripts/bench/train_throughput.py (the same arms, each in its own subprocess) with
configs/bollywood-charrnn.yaml's model at seq_len 50: chars/s, seconds per epoch and peak memory. Seconds per
epoch are EXTRAPOLATED (train characters / chars/s). On a CPU: batch 50; with a GPU: batch 50 and --large-batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import REPO, measure_arms  # noqa: E402

CONFIG = REPO / "configs" / "bollywood-charrnn.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="corpus/bollywood", help="a `lyricdist prepare` output of the giitaayan archive")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (extrapolated to an epoch)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="runs of each arm, interleaved; the median is reported")
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

    from lyricdist.precision import native_bf16

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        arms, batches, where = ["lyricdist:auto", "lyricdist:no", "plain:tf32", "plain:fp16"], [50, args.large_batch], \
            torch.cuda.get_device_name()
    else:
        arms = ["lyricdist:auto", "plain:fp32"] + (["lyricdist:no", "plain:bf16"] if native_bf16(torch.device("cpu")) else [])
        batches, where = [50], f"CPU, {args.threads} torch threads"
    meta = json.loads((Path(args.corpus) / "meta.json").read_text())
    chars = meta["splits"]["train"]["chars"]
    print(f"corpus {args.corpus}: {chars:,} train chars, vocab {meta['vocab_size']}; device {where}; "
          f"{args.steps} timed steps after {args.warmup} warm-up, median of {args.repeats} interleaved runs, "
          f"epoch time extrapolated")
    header = f"{'batch':>5} {'arm':15} {'rnn':4} | {'chars/s':>12} {'ratio':>6} | {'epoch s':>8} | {'peak MB':>8}"
    print(header + "\n" + "-" * len(header))
    rows = []
    for batch in batches:
        results = measure_arms(arms, CONFIG, args.corpus, device, batch, 50, args.steps, args.warmup, args.threads,
                               args.repeats)
        best_plain = max(r["chars_per_s"] for a, r in results.items() if a.startswith("plain"))
        for arm, r in results.items():
            r.update(batch=batch, arm=arm, ratio=r["chars_per_s"] / best_plain, epoch_s=chars / r["chars_per_s"])
            rows.append(r)
            print(f"{batch:>5} {arm:15} {r['precision']:4} | {r['chars_per_s']:12,.0f} {r['ratio']:5.2f}x | "
                  f"{r['epoch_s']:8,.0f} | {r['peak_mb']:8,.0f}", flush=True)
    print("ratio = chars/s over the best plain arm (>1: lyricdist faster). Peak MB: CPU max RSS of the whole process, "
          "CUDA max allocated.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
