"""Corpora of any size: peak host memory and start-up of each rank, for 1 and 2 ranks, on a 200 M-character corpus.

    python scripts/bench/big_corpus.py                          # generate, prepare and measure (a few minutes)
    python scripts/bench/big_corpus.py --workdir /tmp/big --keep # keep the prepared corpora to measure again
    python scripts/bench/big_corpus.py --corpus corpus/genius21  # a prepared corpus (repeatable) instead
    python scripts/bench/big_corpus.py --quick                   # small sizes: what the test runs

Generates a songs table (parquet: 100,000 songs by 21 artists, 200 M characters) and one plain-text document
(tiny-shakespeare repeated to 200 M characters, or generated text without ../shared), prepares both with
`lyricdist prepare` and runs lyricdist's trainer (a 1 x 32 LSTM so the model costs nothing, fp32 on the CPU,
batch 1024 x 100) in a fresh process per rank: start-up, 2 training steps, exit (no evaluation, no checkpoint),
as one process and as 2 (torchrun, gloo). Each rank reports its peak RSS, the time from launch to the end of its
first step and its set-up phases: read (its share of the tokens), layout (song layout and the global target
counts), tables (its streams' inputs, targets, resets, artists), placement (moving them to the device).

Side by side in the same run, a control corpus of 300 k characters (the same trainer, the same batch) gives what
the interpreter, torch, accelerate and the model cost alone: what a big corpus adds on top is divided by the
characters of a rank's share into the per-character figures, and those give the memory a rank needs for a 1 GB
corpus on 8 GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
LETTERS = b"etaoinshrdlucmfwypvbgkjqxz"
TARGETS = {"songs": (2, 0.8), "text": (1, 1.0)}  # (ranks, peak RSS GB per rank) on this 2-core CPU
TARGET_WALL_S = 12.0


# ---- corpora ---------------------------------------------------------------------------------------------------

def _lyric_bytes(rng, n: int) -> bytes:
    """n bytes of lyric-like text: letters by English frequency, words of 1-9 letters, lines of ~6 words."""
    import numpy as np

    weights = np.linspace(2.0, 0.1, len(LETTERS))
    out = np.frombuffer(LETTERS, dtype=np.uint8)[rng.choice(len(LETTERS), n, p=weights / weights.sum())]
    gaps = np.cumsum(rng.integers(2, 10, n // 2 + 1))
    gaps = gaps[gaps < n]
    out[gaps] = ord(" ")
    out[gaps[::6]] = ord("\n")
    return out.tobytes()


def make_songs_table(path: Path, chars: int, songs: int, artists: int = 21, seed: int = 0) -> None:
    """A parquet songs table of about `chars` characters, written in record batches (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    lengths = rng.integers(300, 3700, songs).astype(np.float64)
    lengths = np.maximum(2, np.round(lengths * chars / lengths.sum())).astype(np.int64)
    names = [f"artist {i:02d}" for i in range(artists)]
    schema = pa.schema([("artist", pa.string()), ("title", pa.string()), ("lyrics", pa.string())])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, songs, 2000):
            part = lengths[lo:lo + 2000]
            text = _lyric_bytes(rng, int(part.sum()))
            cuts = np.concatenate([[0], np.cumsum(part)])
            lyrics = [text[a:b - 1].decode("ascii") + "\n" for a, b in zip(cuts[:-1], cuts[1:])]
            writer.write_table(pa.table({"artist": [names[(lo + i) % artists] for i in range(len(part))],
                                         "title": [f"song {lo + i}" for i in range(len(part))],
                                         "lyrics": lyrics}, schema=schema))
    tmp.replace(path)


def make_text(path: Path, chars: int, seed: int = 0) -> None:
    """One plain-text document of `chars` characters: tiny-shakespeare repeated, or generated text without it."""
    import numpy as np

    unit = SHAKESPEARE.read_bytes() if SHAKESPEARE.is_file() else _lyric_bytes(np.random.default_rng(seed), 1 << 20)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = chars
        while left > 0:
            f.write(unit[:left])
            left -= min(left, len(unit))
    tmp.replace(path)


def prepared(workdir: Path, name: str, make, chars: int) -> tuple[Path, float]:
    """The prepared corpus `name` in workdir (made and prepared unless already there): (path, prepare seconds)."""
    corpus = workdir / f"corpus-{name}"
    meta = corpus / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("bench_chars") == chars:
        return corpus, 0.0
    source = make(workdir)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lyricdist", "prepare", str(source), "--out", str(corpus), "--overwrite", "true"],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    m = json.loads(meta.read_text())
    m["bench_chars"] = chars  # lets a later run with the same --workdir reuse it
    meta.write_text(json.dumps(m))
    source.unlink()
    return corpus, seconds


# ---- one measured run: a rank of the trainer ---------------------------------------------------------------------

def worker(args) -> None:
    """One rank: build the trainer on the corpus, 2 training steps, report (to args.report.rankN.json)."""
    launched = float(os.environ["BIG_CORPUS_LAUNCHED"])
    imported = time.time()
    from lyricdist.train import Trainer, load_config

    rank = int(os.environ.get("RANK", 0))
    cfg = load_config(TINY, [f"--data.corpus={args.corpus[0]}", f"--train.out_dir={args.run_dir}",
                             "--model.num_layers=1", "--model.hidden_size=32", "--model.embedding_dim=0",
                             f"--train.batch_size={args.batch_size}", f"--train.seq_len={args.seq_len}",
                             f"--train.max_steps={args.steps}", "--train.cpu=true", "--train.mixed_precision=no",
                             "--tracking.backend=none", "--samples.enabled=false"])
    started = time.time()
    trainer = Trainer(cfg)
    set_up = time.time()
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before any step: data + imports
    first = None
    for _ in range(args.steps):
        trainer.train_step()
        first = first or time.time()
    phases: dict[str, float] = {}
    for part in (trainer.batches, trainer.val):  # old trainers have no phase timings: left empty
        for k, v in getattr(part, "setup_seconds", {}).items():
            phases[k] = phases.get(k, 0.0) + v
    tables = sum(getattr(p.table, "nbytes", 0) for p in (trainer.batches, trainer.val) if p.table is not None)
    meta = trainer.corpus.meta["splits"]
    report = {
        "rank": rank, "world": trainer.acc.num_processes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "setup_rss_bytes": setup_peak,
        "imports_s": started - imported, "start_s": imported - launched, "trainer_s": set_up - started,
        "first_step_s": first - launched, "phases": phases, "table_bytes": tables,
        "corpus_chars": meta["train"]["chars"] + meta["val"]["chars"],
    }
    Path(f"{args.report}.rank{rank}.json").write_text(json.dumps(report))


def measure(corpus: Path, ranks: int, workdir: Path, args) -> dict:
    """Launch one run (a process, or torchrun with `ranks` processes) and gather every rank's report."""
    tag = f"{corpus.name}-{ranks}"
    report = workdir / f"report-{tag}"
    run_dir = workdir / f"run-{tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    for old in workdir.glob(f"report-{tag}.rank*.json"):
        old.unlink()
    me = [str(Path(__file__).resolve()), "--worker", "--corpus", str(corpus), "--report", str(report),
          "--run-dir", str(run_dir), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
          "--steps", str(args.steps)]
    launcher = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks)),
           "BIG_CORPUS_LAUNCHED": repr(time.time())}
    started = time.perf_counter()
    proc = subprocess.run(launcher + me, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"the {ranks}-rank run on {corpus} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    rows = [json.loads(p.read_text()) for p in sorted(workdir.glob(f"report-{tag}.rank*.json"))]
    shutil.rmtree(run_dir, ignore_errors=True)
    if len(rows) != ranks:
        raise SystemExit(f"{ranks}-rank run on {corpus}: {len(rows)} rank report(s)")
    phases = {k: max(r["phases"].get(k, 0.0) for r in rows) for k in ("read", "layout", "tables", "placement")}
    return {"corpus": str(corpus), "ranks": ranks, "wall_s": wall,
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in rows),
            "setup_rss_bytes": max(r["setup_rss_bytes"] for r in rows),
            "first_step_s": max(r["first_step_s"] for r in rows), "phases": phases,
            "table_bytes": max(r["table_bytes"] for r in rows), "corpus_chars": rows[0]["corpus_chars"],
            "has_phases": all(r["phases"] for r in rows), "ranks_rows": rows}


# ---- the benchmark -----------------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", action="append", help="a prepared corpus to measure instead of the generated ones "
                   "(repeatable)")
    p.add_argument("--chars", type=float, default=2e8, help="characters of each generated corpus")
    p.add_argument("--songs", type=int, default=100_000, help="songs of the generated table")
    p.add_argument("--control-chars", type=float, default=3e5, help="characters of the control corpus")
    p.add_argument("--ranks", default="1,2", help="process counts to measure, comma-separated")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes (2 M characters, 1,000 songs): a smoke run")
    p.add_argument("--workdir", help="where corpora are generated and prepared (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (reuse its prepared corpora next time)")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.chars, args.songs = 2e6, 1000
    ranks = [int(r) for r in args.ranks.split(",")]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="big_corpus-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, ranks, workdir)
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, ranks: list[int], workdir: Path) -> None:
    chars, control_chars = int(args.chars), int(args.control_chars)
    corpora: list[tuple[str, Path, float]] = []
    control, _ = prepared(workdir, "control", lambda d: (make_songs_table(d / "control.parquet", control_chars, 150),
                                                         d / "control.parquet")[1], control_chars)
    if args.corpus:
        corpora += [(Path(c).name, Path(c), 0.0) for c in args.corpus]
    else:
        songs, s_prep = prepared(workdir, "songs", lambda d: (make_songs_table(d / "songs.parquet", chars, args.songs),
                                                              d / "songs.parquet")[1], chars)
        text, t_prep = prepared(workdir, "text", lambda d: (make_text(d / "text.txt", chars), d / "text.txt")[1], chars)
        corpora += [("songs", songs, s_prep), ("text", text, t_prep)]
    import torch

    print(f"big_corpus: 1 x 32 LSTM, fp32, batch {args.batch_size} x {args.seq_len}, {args.steps} steps; "
          f"{os.cpu_count()} CPU core(s), torch {torch.__version__}; each run: launch, set-up, {args.steps} training "
          f"steps, exit (no evaluation, no checkpoint)")
    for name, path, prep in corpora:
        meta = json.loads((path / "meta.json").read_text())
        s = meta["splits"]
        print(f"  {name}: {path} - train {s['train']['chars']:,} chars / {s['train']['docs']:,} docs, val "
              f"{s['val']['chars']:,} / {s['val']['docs']:,}, vocab {meta['vocab_size']}"
              + (f"; prepared in {prep:.1f} s" if prep else ""))
    width = max([10] + [len(n) for n, _, _ in corpora])
    header = (f"{'corpus':{width}} {'ranks':>5} | {'peak RSS/rank':>13} {'at set-up':>9} {'tables/rank':>11} | "
              f"{'1st step s':>10} {'wall s':>7} | {'read':>5} {'layout':>6} {'tables':>6} {'place':>6}")
    print(header + "\n" + "-" * len(header))
    rows = []
    for name, path in [("control", control)] + [(n, p) for n, p, _ in corpora]:
        for w in ranks:
            r = measure(path, w, workdir, args)
            r["name"] = name
            rows.append(r)
            ph = r["phases"]
            phase_text = (f"{ph['read']:5.2f} {ph['layout']:6.2f} {ph['tables']:6.2f} {ph['placement']:6.2f}"
                          if r["has_phases"] else f"{'(not reported)':>27}")
            print(f"{name:{width}} {w:>5} | {r['peak_rss_bytes'] / 1e9:10.2f} GB {r['setup_rss_bytes'] / 1e9:6.2f} GB "
                  f"{r['table_bytes'] / 1e6:8.0f} MB | "
                  f"{r['first_step_s']:10.1f} {r['wall_s']:7.1f} | {phase_text}", flush=True)
    print("peak RSS: the largest rank's, over the whole run and up to the end of set-up (before any step: the "
          "steps' own memory grows with the vocabulary, not the corpus); phases: set-up seconds of the slowest rank "
          "(train + validation tables)")
    report(rows, ranks, args, chars)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def report(rows: list[dict], ranks: list[int], args, chars: int) -> None:
    """Per-character figures over the control run, the side-by-side ratios, the 1 GB / 8 GPU projection, targets."""
    by = {(r["name"], r["ranks"]): r for r in rows}
    print("\nper character of a rank's share (corpus chars / ranks), over the control run with as many ranks:")
    per_char = {}
    for (name, w), r in by.items():
        if name == "control":
            continue
        share, base = r["corpus_chars"] / w, by[("control", w)]
        per_char[(name, w)] = (r["table_bytes"] / share, (r["setup_rss_bytes"] - base["setup_rss_bytes"]) / share,
                               (r["first_step_s"] - base["first_step_s"]) / share * 1e8)
        t, m, s = per_char[(name, w)]
        print(f"  {name:10} {w} rank(s): tables {t:.2f} B/char, set-up peak RSS {m:+.2f} B/char, time to first "
              f"step {s:+.2f} s per 100 M chars")
    names = sorted({n for n, _ in per_char})
    if {"songs", "text"} <= set(names):
        for w in ranks:
            a, b = by[("text", w)], by[("songs", w)]
            print(f"  one document / many songs, {w} rank(s): set-up peak RSS "
                  f"{a['setup_rss_bytes'] / b['setup_rss_bytes']:.2f}x, tables per char "
                  f"{a['table_bytes'] / a['corpus_chars'] / (b['table_bytes'] / b['corpus_chars']):.2f}x, set-up "
                  f"phases {sum(a['phases'].values()):.2f} s vs {sum(b['phases'].values()):.2f} s")
    if 1 in ranks and 2 in ranks:
        for name in names:
            print(f"  {name}: tables per rank, 2 ranks / 1 rank = "
                  f"{by[(name, 2)]['table_bytes'] / by[(name, 1)]['table_bytes']:.2f}")
    if per_char:
        tables = max(t for t, _, _ in per_char.values())
        rss = max(0.0, max(m for _, m, _ in per_char.values()))
        base = max(by[("control", w)]["setup_rss_bytes"] for w in ranks)
        share = 1e9 / 8
        print(f"\n1 GB corpus on 8 GPUs ({share / 1e6:.0f} M chars a rank), from the worst figures above: device "
              f"{tables * share / 1e9:.2f} GB of tables a rank (resident; pinned host memory instead when over half "
              f"the free device memory of some rank); host peak at set-up {(base + rss * share) / 1e9:.2f} GB a rank "
              f"= {base / 1e9:.2f} GB process (CPU build; add the CUDA context on a GPU) + {rss * share / 1e9:.2f} GB "
              f"(its tables, built in host memory, copied to the device, then freed)")
    if args.quick or args.corpus or chars < 2e8:
        print("(the targets apply to the generated 200 M-character corpora)")
        return
    print("\ntargets (200 M chars, 2-core CPU):")
    for name, (w, gb) in TARGETS.items():
        if (name, w) in by:
            got, at_setup = by[(name, w)]["peak_rss_bytes"] / 1e9, by[(name, w)]["setup_rss_bytes"] / 1e9
            print(f"  {name} {w} rank(s): peak RSS per rank {got:.2f} GB <= {gb} GB: {'met' if got <= gb else 'MISSED'} "
                  f"(at the end of set-up {at_setup:.2f} GB: {'met' if at_setup <= gb else 'MISSED'})")
    slow = max(r["wall_s"] for r in rows)
    print(f"  every run (start-up, {args.steps} steps, exit) <= {TARGET_WALL_S:.0f} s: slowest {slow:.1f} s: "
          f"{'met' if slow <= TARGET_WALL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
