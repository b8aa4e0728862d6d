"""Time to quality: lyricdist and the competent plain loop, validation loss against training wall-clock.

    python scripts/bench/time_to_quality.py --png ttq.png                 # CPU: configs/shakespeare-cpu.yaml, 120 s
    python scripts/bench/time_to_quality.py --budget-s 180 --png ttq.png  # GPU: configs/shakespeare-gpu.yaml

Each arm trains the config's model for the same budget of training seconds, in its own subprocess with the same
torch thread count, on the same device, from the same initial weights (same seed, same parameter order):
  lyricdist  `Trainer.train_step()`: contiguous streams, hidden state carried across chunks, precision per
             train.mixed_precision.
  plain      scripts/bench/plain_loop.py: random windows, zero state every batch, the same batch, seq_len, Adam,
             learning-rate schedule and clipping; fp32 on a CPU, `--plain-variant` (default tf32) on a GPU.
Both arms are scored alike, in fp32 (lyricdist's fp32 masters, the plain loop's fp32 weights, copied into one fp32
evaluator model), under both protocols, so neither arm is scored the way only the other trained:
  carried  every real target of the validation split, streams with the state carried through (lyricdist's
           `Trainer.evaluate`, its training protocol);
  windows  the validation text cut into seq_len windows, each from a zero state (the plain loop's protocol).
The verdict is given under each. The clock stops while evaluating.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # plain_loop, beside this file
from plain_loop import VARIANTS, PlainLoop  # noqa: E402

SHAKESPEARE_TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
SHAKESPEARE_TARGET = 1.45  # nats/char: the bar (nanoGPT's small character GPT: 1.4697)
ARMS = ("lyricdist", "plain")
PROTOCOL = "TTQ "  # worker -> parent lines: "TTQ {json}"


def _load_config(args, out_dir: str):
    """The run config as both arms see it: benchmark runs track nothing and sample nothing."""
    from lyricdist.train import load_config

    cpu = str(args.device == "cpu").lower()
    return load_config(args.config, [f"--data.corpus={args.corpus}", f"--train.out_dir={out_dir}", f"--train.cpu={cpu}",
                                     "--tracking.backend=none", "--samples.enabled=false"])


def _check_comparable(cfg, config: str) -> None:
    """The plain loop is an Adam-trained LSTM without weight decay or artist input: refuse configs it cannot match."""
    m, t = cfg.model, cfg.train
    problems = [f"model.cell={m.cell} (plain: lstm)"] if m.cell != "lstm" else []
    problems += [f"model.artist_embedding_dim={m.artist_embedding_dim} (plain: 0)"] if m.artist_embedding_dim else []
    problems += [f"train.optimizer={t.optimizer} (plain: adam)"] if t.optimizer != "adam" else []
    problems += [f"train.weight_decay={t.weight_decay} (plain: 0)"] if t.weight_decay else []
    if problems:
        raise SystemExit(f"{config}: the plain loop cannot match " + ", ".join(problems))


# ---- one arm, in a worker subprocess -------------------------------------------------------------------------
def _emit(**event) -> None:
    print(PROTOCOL + json.dumps(event), flush=True)


class FP32Scorer:
    """Validation loss of a CharRNN-shaped state dict, in fp32, under both protocols (see the module docstring)."""

    def __init__(self, trainer):
        import torch

        from lyricdist.model import CharRNN

        cfg, self.trainer = trainer.cfg, trainer
        self.device = trainer.acc.device
        self.model = CharRNN(cfg.model, len(trainer.vocab)).to(self.device).eval()
        self.seq_len = cfg.train.seq_len
        tokens = torch.from_numpy(__import__("numpy").asarray(trainer.corpus.tokens("val")).astype("int64"))
        n = (len(tokens) - 1) // self.seq_len * self.seq_len
        self.windows = tokens[: n + 1].to(self.device)  # window k: inputs [kT, kT+T), targets [kT+1, kT+T]

    def score(self, state: dict) -> dict:
        import math

        import torch

        self.model.load_state_dict({k: v.float() for k, v in state.items()})
        carried = self._carried()
        total, count, T = 0.0, 0, self.seq_len
        with torch.no_grad():
            starts = torch.arange(0, len(self.windows) - 1, T, device=self.device)
            for lo in range(0, len(starts), 256):
                idx = starts[lo:lo + 256, None] + torch.arange(T + 1, device=self.device)
                w = self.windows[idx]
                logits, _ = self.model(w[:, :-1])
                total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(),
                                                                 reduction="sum"))
                count += w[:, 1:].numel()
        windows = total / max(count, 1)
        return {"val_loss": carried, "val_bpc": carried / math.log(2), "val_loss_windows": windows}

    def _carried(self) -> float:
        """Trainer.evaluate's protocol on the fp32 evaluator model."""
        import torch

        from lyricdist.train import token_nll

        val, total, state = self.trainer.val, 0.0, None
        with torch.no_grad():
            for c in range(len(val)):
                b = val.batch(c)
                logits, state = self.model(b.x, state, b.reset, b.artist)
                total += float(token_nll(logits.float(), b.y))
        return total / max(val.n_targets, 1)


def worker(args) -> None:
    import torch

    from lyricdist.precision import full_precision_state
    from lyricdist.train import Trainer, lr_factor

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = _load_config(args, out)
        t = cfg.train
        trainer = Trainer(cfg)  # the lyricdist arm, or the plain arm's data (built first: it sets TF32 flags)
        device = trainer.acc.device
        scorer = FP32Scorer(trainer)
        if args.arm == "lyricdist":
            def step() -> int:
                return trainer.train_step().items  # real targets: song-alignment padding is not counted

            model = trainer.acc.unwrap_model(trainer.model)

            def evaluate() -> dict:
                return scorer.score(full_precision_state(model, trainer.masters))

            about = trainer.precision.describe()
        else:
            plain = PlainLoop(trainer.corpus.tokens("train"), len(trainer.vocab), cfg.model.hidden_size,
                              cfg.model.num_layers, t.batch_size, t.seq_len, device, variant=args.plain_variant,
                              lr=t.lr, grad_clip=t.grad_clip or float("inf"), dropout=cfg.model.dropout,
                              embedding_dim=cfg.model.embedding_dim, seed=t.seed)
            cpe = trainer.batches.chunks_per_epoch
            schedule = torch.optim.lr_scheduler.LambdaLR(plain.opt, lambda s: lr_factor(s, t, cpe))

            def step() -> int:
                plain.step()
                schedule.step()
                return plain.chars_per_step

            def evaluate() -> dict:
                return scorer.score(plain.model.state_dict())

            about = f"plain loop, {args.plain_variant} (random windows, zero state per batch)"
        _emit(event="info", about=about)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        _train_for(step, evaluate, sync, args.budget_s, args.eval_every_s)


def _train_for(step, evaluate, sync, budget_s: float, eval_every_s: float) -> None:
    """Steps until `budget_s` training seconds, evaluating at 0, every `eval_every_s` and at the end (off the clock).

    The host checks the clock after every step without waiting for the device; before each evaluation it
    synchronizes, so the recorded seconds include all queued device work. `cpu_s` (this process's CPU time while
    training) shows whether the arm had its cores to itself.
    """
    train_s, cpu_s, steps, chars = 0.0, 0.0, 0, 0

    def point() -> None:
        _emit(event="point", train_s=train_s, cpu_s=cpu_s, steps=steps, chars=chars, **evaluate())

    point()
    while train_s < budget_s:
        mark = min((int(train_s // eval_every_s) + 1) * eval_every_s, budget_s)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        while train_s + time.perf_counter() - t0 < mark:
            chars += step()
            steps += 1
        sync()
        train_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        point()


# ---- the parent: corpus, both arms, report ---------------------------------------------------------------------
def _ensure_corpus(args) -> None:
    """--corpus as given; else the config's corpus, prepared from ../shared's tinyshakespeare when it is missing."""
    if args.corpus:
        if not Path(args.corpus, "meta.json").is_file():
            raise SystemExit(f"--corpus {args.corpus} is not a prepared corpus; create it with `lyricdist prepare`")
        return
    import yaml

    configured = (yaml.safe_load(Path(args.config).read_text(encoding="utf-8")).get("data") or {}).get("corpus", "")
    path = Path(configured) if Path(configured).is_absolute() else REPO / configured
    args.corpus = str(path)
    if (path / "meta.json").is_file():
        return
    if path.name != "tinyshakespeare":
        raise SystemExit(f"corpus {path} not found; pass --corpus DIR (a `lyricdist prepare` output)")
    if not SHAKESPEARE_TEXT.is_file():
        raise SystemExit(f"corpus {path} not found and {SHAKESPEARE_TEXT} is absent to prepare it from; "
                         f"pass --corpus DIR (a prepared tinyshakespeare)")
    from lyricdist.prepare import prepare

    meta = prepare([str(SHAKESPEARE_TEXT)], str(path), val_fraction=0.1, quiet=True)
    print(f"prepared {SHAKESPEARE_TEXT} into {path}: {meta['splits']['train']['chars']:,} train / "
          f"{meta['splits']['val']['chars']:,} val characters (the last 10% is validation)")


def _is_shakespeare(corpus: str) -> bool:
    from lyricdist.corpus_format import read_meta

    return "tinyshakespeare" in Path(corpus).name or any(
        "tinyshakespeare" in s.get("source", "") for s in read_meta(corpus).get("sources", []))


def run_arm(arm: str, args) -> dict:
    """One arm in a fresh subprocess; prints its curve rows as they arrive and returns {about, points}."""
    cmd = [sys.executable, __file__, "--worker", arm, "--config", args.config, "--corpus", args.corpus,
           "--device", args.device, "--threads", str(args.threads), "--budget-s", str(args.budget_s),
           "--eval-every-s", str(args.eval_every_s), "--plain-variant", args.plain_variant]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(args.threads)}
    result: dict = {"about": "", "points": []}
    other = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        for line in proc.stdout:
            if not line.startswith(PROTOCOL):
                other.append(line)
                continue
            event = json.loads(line[len(PROTOCOL):])
            if event["event"] == "info":
                result["about"] = event["about"]
                print(f"\n{arm}: {event['about']}")
                print(f"  {'train s':>8} {'steps':>7} {'chars':>11} {'val loss':>9} {'val bpc':>8}")
            else:
                result["points"].append({k: v for k, v in event.items() if k != "event"})
                print(f"  {event['train_s']:8.1f} {event['steps']:7d} {event['chars']:11,d} "
                      f"{event['val_loss']:9.4f} {event['val_bpc']:8.4f}", flush=True)
        proc.wait()
        err.seek(0)
        if proc.returncode or len(result["points"]) < 2:
            raise SystemExit(f"{arm} arm failed ({proc.returncode}):\n{''.join(other)[-2000:]}\n{err.read()[-4000:]}")
    return result


def summarize(arm: str, points: list[dict], target: float | None) -> dict:
    last = points[-1]
    reached = next((p["train_s"] for p in points if target is not None and p["val_loss"] <= target), None)
    return {"arm": arm, "steps": last["steps"], "train_s": last["train_s"],
            "chars_per_s": last["chars"] / last["train_s"], "final_val_loss": last["val_loss"],
            "best_val_loss": min(p["val_loss"] for p in points), "reached_target_s": reached,
            "final_val_loss_windows": last["val_loss_windows"]}


def report(results: dict, target: float | None, args) -> list[dict]:
    """The comparison table, a warning for an arm that did not have its cores, and the verdict line."""
    rows = [summarize(arm, r["points"], target) for arm, r in results.items()]
    print(f"\n{'arm':9} | {'steps':>6} | {'chars/s':>9} | {'final val loss':>14} | {'best val loss':>13} | "
          f"{'final, windows':>14}" + (f" | {'reached ' + format(target, 'g') + ' at':>15}" if target is not None else ""))
    for r in rows:
        reached = "-" if r["reached_target_s"] is None else f"{r['reached_target_s']:.1f} s"
        print(f"{r['arm']:9} | {r['steps']:6d} | {r['chars_per_s']:9,.0f} | {r['final_val_loss']:14.4f} | "
              f"{r['best_val_loss']:13.4f} | {r['final_val_loss_windows']:14.4f}"
              + (f" | {reached:>15}" if target is not None else ""))
    print("val loss: nats/char in fp32, state carried through the validation split (lyricdist's protocol); windows: "
          "seq_len windows from a zero state (the plain loop's protocol)")
    if args.device == "cpu":
        for arm, r in results.items():
            last = r["points"][-1]
            busy = last["cpu_s"] / (last["train_s"] * args.threads)
            if busy < 0.85:
                print(f"warning: {arm} used {busy:.0%} of {args.threads} cores while training: other processes were "
                      f"competing for them, so its chars/s and curve are understated; rerun on an idle machine")
    ld, pl = rows
    speed = ld["chars_per_s"] / pl["chars_per_s"]
    for key, protocol in (("final_val_loss", "state carried"), ("final_val_loss_windows", "zero-state windows")):
        gap = pl[key] - ld[key]
        if gap == 0:
            print(f"verdict ({protocol}): tie at {ld[key]:.4f} nats; lyricdist at {speed:.2f}x the plain loop's chars/s")
        else:
            win, lose = (ld, pl) if gap > 0 else (pl, ld)
            print(f"verdict ({protocol}): {win['arm']} ends lower by {abs(gap):.4f} nats/char ({win[key]:.4f} vs "
                  f"{lose[key]:.4f}); lyricdist at {speed:.2f}x the plain loop's chars/s")
    return rows


def write_png(path: str, results: dict, target: float | None, title: str) -> None:
    """Both arms' curves through `lyricdist plot`'s figure: val loss (nats, bits/char) against step and against
    training seconds, and cumulative chars/s."""
    from lyricdist.fileio import atomic_write_bytes
    from lyricdist.curves import render_png

    runs = {arm: [{"step": p["steps"], "wall_s": p["train_s"], "val_loss": p["val_loss"],
                   "chars_per_sec": p["chars"] / p["train_s"] if p["train_s"] else None} for p in r["points"]]
            for arm, r in results.items()}
    atomic_write_bytes(path, render_png(runs, title=title, target=target,
                                        time_label="training seconds (evaluation excluded)"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None,
                   help="run config (default: configs/shakespeare-cpu.yaml on a CPU, shakespeare-gpu.yaml on CUDA)")
    p.add_argument("--corpus", default=None, help="a prepared corpus (default: the config's data.corpus)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, the same for both arms")
    p.add_argument("--budget-s", type=float, default=120.0, help="training seconds per arm")
    p.add_argument("--eval-every-s", type=float, default=None, help="training seconds between evaluations (budget/8)")
    p.add_argument("--plain-variant", default=None, choices=VARIANTS,
                   help="the plain loop's precision (default: tf32 on CUDA, fp32 on a CPU)")
    p.add_argument("--target", type=float, default=None,
                   help=f"val loss to reach (default {SHAKESPEARE_TARGET} on tinyshakespeare, else none)")
    p.add_argument("--png", default=None, help="write both curves here")
    p.add_argument("--json", default=None, help="write both curves and the summary here")
    p.add_argument("--worker", choices=ARMS, dest="arm", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        return worker(args)

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.config = args.config or str(REPO / "configs" / f"shakespeare-{'gpu' if args.device == 'cuda' else 'cpu'}.yaml")
    args.eval_every_s = args.eval_every_s or args.budget_s / 8
    args.plain_variant = args.plain_variant or ("tf32" if args.device == "cuda" else "fp32")
    _ensure_corpus(args)
    with tempfile.TemporaryDirectory() as out:
        cfg = _load_config(args, out)
    _check_comparable(cfg, args.config)
    target = args.target
    if target is None and _is_shakespeare(args.corpus):
        target = SHAKESPEARE_TARGET
    m, t = cfg.model, cfg.train
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    inputs = f"embedding {m.embedding_dim}" if m.embedding_dim else "one-hot"
    shape = f"{m.num_layers} x {m.hidden_size} {m.cell}, {inputs}, dropout {m.dropout:g}"
    print(f"time to quality: {where}, {args.threads} torch threads, {args.budget_s:g} training seconds per arm, "
          f"evaluation every {args.eval_every_s:g} s (off the clock)")
    print(f"config {args.config}; corpus {args.corpus}")
    print(f"model {shape}; batch {t.batch_size} x {t.seq_len} chars; {t.optimizer} lr {t.lr:g} ({t.lr_schedule}), "
          f"clip {t.grad_clip:g}" + (f"; target val loss {target:g}" if target is not None else ""))

    results = {arm: run_arm(arm, args) for arm in ARMS}
    rows = report(results, target, args)
    if args.png:
        write_png(args.png, results, target, f"{Path(args.config).name} on {where}, {args.threads} threads")
        print(f"wrote {args.png}")
    if args.json:
        curves = {"device": where, "threads": args.threads, "budget_s": args.budget_s, "config": args.config,
                  "corpus": args.corpus, "target": target, "summary": rows, "arms": results}
        Path(args.json).write_text(json.dumps(curves, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
