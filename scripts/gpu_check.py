"""The GPU check: one prepared command that answers on a lent GPU what reading the code cannot.

    python3 scripts/gpu_check.py --out "$OUT" --shakespeare .gpu/input.txt    # the GPU machine (README: "The GPU check")
    python scripts/gpu_check.py --dry-run --out /tmp/gpu-check                # anywhere: same code path, tiny, CPU

In order, each phase within what is left of --budget-s (default 470 s, inside the device tool's 8 minutes):
  1. precision   for the 4x256 and 3x300 presets (their own batches) and 4x256 at 1024x100: the precision line, the
                 RNN weights in one buffer (and no cuDNN "not part of single contiguous chunk" warning), one
                 profiled training step's kernel names and launch count, then 20 steps under
                 torch.cuda.set_sync_debug_mode("error")
  2. tests       tests/test_gpu.py (pytest)
  3. throughput  scripts/bench/train_throughput.py, every regime (the presets' own batches, 1024x100, 4096x200)
  4. quality     scripts/bench/time_to_quality.py --config configs/shakespeare-gpu.yaml, 60 training seconds per arm
Everything lands in OUT/gpu_check.json and OUT/gpu_check.png; a short table is printed last. --dry-run runs the
same phases on the CPU with tiny shapes (CI exercises it: tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the GPU machine runs from a checkout, lyricdist not installed

# (name, config, overrides): the presets at their own batches, and the large-batch regime
GPU_SHAPES = [
    ("lstm-4x256@128x40", "lstm-4x256.yaml", []),
    ("charrnn-3x300@50x50", "charrnn-3x300.yaml", []),
    ("lstm-4x256@1024x100", "lstm-4x256.yaml", ["--train.batch_size=1024", "--train.seq_len=100"]),
]
DRY_SHAPES = [
    ("lstm-4x256 (tiny: 2x32@8x16)", "lstm-4x256.yaml", ["--model.num_layers=2", "--model.hidden_size=32",
                                                         "--train.batch_size=8", "--train.seq_len=16"]),
    ("charrnn-3x300 (tiny: 2x24@8x16)", "charrnn-3x300.yaml", ["--model.num_layers=2", "--model.hidden_size=24",
                                                               "--train.batch_size=8", "--train.seq_len=16"]),
]
SYNC_STEPS = 20


class Budget:
    """Seconds left of the whole check; a phase that would not fit is skipped and says so."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def environment(device: str) -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
           "device": device}
    try:
        import accelerate

        env["accelerate"] = accelerate.__version__
    except ImportError:
        pass
    if device == "cuda":
        from lyricdist.precision import native_bf16

        env.update(gpu=torch.cuda.get_device_name(), capability=".".join(map(str, torch.cuda.get_device_capability())),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   native_bf16=native_bf16(torch.device("cuda")),
                   memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def prepare_corpora(work: Path, shakespeare: str | None) -> dict:
    from lyricdist.prepare import prepare

    corpora = {"demo": work / "corpus-demo"}
    prepare(["demo"], str(corpora["demo"]), val_fraction=0.1, seed=1337, quiet=True)
    if shakespeare and Path(shakespeare).is_file():
        corpora["shakespeare"] = work / "tinyshakespeare"
        prepare([shakespeare], str(corpora["shakespeare"]), val_fraction=0.1, quiet=True)
    return corpora


# ---- 1. precision, kernels, one buffer, no host sync -------------------------------------------------------------
def profile_step(trainer, device: str) -> dict:
    """One training step under the profiler: device kernels by time (CUDA) and how many were launched; on a CPU the
    dispatched aten ops stand in for kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lyricdist.precision import OpCounter

    if device != "cuda":
        with OpCounter() as c:
            trainer.train_step()
        return {"launches": c.total, "kernels": c.rnn_kernels(), "what": "aten ops dispatched (no CUDA)"}
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        trainer.train_step()
        torch.cuda.synchronize()
    events = prof.events()
    kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
               and "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
    launches = sum(1 for e in events if e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                  "cuLaunchKernelEx"))
    by_time: dict[str, float] = {}
    for e in kernels:
        by_time[e.name] = by_time.get(e.name, 0.0) + getattr(e, "device_time", 0.0)
    top = sorted(by_time.items(), key=lambda kv: -kv[1])[:8]
    return {"launches": launches, "device_kernels": len(kernels),
            "kernels": [f"{name[:90]} ({us / 1000:.2f} ms)" for name, us in top], "what": "CUDA kernels"}


def sync_free_steps(trainer, device: str, steps: int) -> dict:
    """`steps` training steps with torch.cuda.set_sync_debug_mode("error"): any host sync raises."""
    import torch

    if device != "cuda":
        for _ in range(steps):
            trainer.train_step()
        return {"steps": steps, "ok": None, "note": "no CUDA: sync debug mode not applicable"}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            trainer.train_step()
        result = {"steps": steps, "ok": True}
    except RuntimeError as e:
        result = {"steps": steps, "ok": False, "error": str(e).splitlines()[0][:300]}
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return result


def precision_phase(shapes, corpus: Path, device: str, work: Path) -> list[dict]:
    import torch

    from lyricdist.precision import NOT_ONE_BUFFER, weights_in_one_buffer
    from lyricdist.train import Trainer, load_config

    rows = []
    for name, config, overrides in shapes:
        row: dict = {"shape": name}
        try:
            cfg = load_config(REPO / "configs" / config, [
                f"--data.corpus={corpus}", f"--train.out_dir={work / name.split()[0]}", "--tracking.backend=none",
                "--samples.enabled=false", f"--train.cpu={'false' if device == 'cuda' else 'true'}",
                "--train.mixed_precision=auto", *overrides])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trainer = Trainer(cfg)
                rnn = trainer.acc.unwrap_model(trainer.model).rnn
                row.update(precision=trainer.precision.describe(), rnn_dtype=trainer.precision.name,
                           batch=f"{cfg.train.batch_size}x{cfg.train.seq_len}")
                for _ in range(3):  # warm-up: optimizer state, workspaces
                    trainer.train_step()
                row["profile"] = profile_step(trainer, device)
                row["sync_free"] = sync_free_steps(trainer, device, SYNC_STEPS)
            copies = [str(w.message) for w in caught if NOT_ONE_BUFFER in str(w.message)]
            # cuDNN reads one weight buffer; oneDNN (CPU) reorders the weights itself, so there it does not apply
            row["one_buffer"] = (weights_in_one_buffer(rnn) and not copies) if device == "cuda" else None
            if copies:
                row["copy_warning"] = copies[0][:200]
            del trainer
            if device == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # one shape failing must not hide the others' answers
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            row["traceback"] = traceback.format_exc()[-2000:]
        rows.append(row)
        print(f"  {name}: {row.get('precision', row.get('error'))}", flush=True)
    return rows


# ---- 2-4. subprocess phases ---------------------------------------------------------------------------------------
def run(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), cwd=REPO,
                              env={**os.environ, "WANDB_MODE": "disabled", **(env or {})})
        result = {"returncode": proc.returncode, "stdout_tail": proc.stdout[-6000:], "stderr_tail": proc.stderr[-3000:]}
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        result = {"returncode": None, "timed_out_after_s": round(timeout), "stdout_tail": out[-6000:]}
    result["seconds"] = round(time.monotonic() - started, 1)
    result["cmd"] = " ".join(cmd[1:])
    return result


def tests_phase(budget: Budget) -> dict:
    result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_gpu.py"],
                 min(budget.left() - 5, 150))
    summary = [ln for ln in result.get("stdout_tail", "").splitlines() if " passed" in ln or " failed" in ln
               or " skipped" in ln or " error" in ln]
    result["summary"] = summary[-1] if summary else "no pytest summary (see stdout_tail)"
    return result


def throughput_phase(budget: Budget, work: Path, dry: bool) -> dict:
    out = work / "throughput.json"
    if dry:
        args = ["--corpus-chars", "3e5", "--steps", "2", "--warmup", "1", "--repeats", "1", "--regimes", "4x256@128x40",
                "--threads", "1", "--device", "cpu"]
    else:
        args = ["--corpus-chars", "20e6", "--steps", "200", "--warmup", "10", "--repeats", "1", "--regimes", "all",
                "--device", "cuda"]
    result = run([sys.executable, str(REPO / "scripts" / "bench" / "train_throughput.py"), *args, "--json", str(out)],
                 min(budget.left() - 5, 200))
    if out.is_file():
        result["rows"] = json.loads(out.read_text())
    return result


def quality_phase(budget: Budget, work: Path, corpora: dict, dry: bool) -> dict:
    out = work / "ttq.json"
    if dry:
        args = ["--config", str(REPO / "configs" / "tiny.yaml"), "--corpus", str(corpora["demo"]), "--device", "cpu",
                "--budget-s", "2", "--eval-every-s", "1"]
    elif "shakespeare" in corpora:
        args = ["--config", str(REPO / "configs" / "shakespeare-gpu.yaml"), "--corpus", str(corpora["shakespeare"]),
                "--device", "cuda", "--budget-s", "60", "--eval-every-s", "10"]
    else:
        return {"skipped": "no tinyshakespeare text: pass --shakespeare PATH (README: The GPU check)"}
    result = run([sys.executable, str(REPO / "scripts" / "bench" / "time_to_quality.py"), *args, "--json", str(out)],
                 budget.left() - 5)
    if out.is_file():
        result["curves"] = json.loads(out.read_text())
    return result


# ---- report ------------------------------------------------------------------------------------------------------
def write_png(path: Path, report: dict) -> str:
    """Throughput per regime and arm (left), time-to-quality curves (right)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing: no PNG (carry it as a wheel, README: The GPU check)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    rows = report.get("throughput", {}).get("rows") or []
    regimes = sorted({r["regime"] for r in rows}, key=lambda n: [r["regime"] for r in rows].index(n))
    arms = sorted({r["arm"] for r in rows})
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        values = [next((r["chars_per_s"] for r in rows if r["regime"] == g and r["arm"] == arm), 0) for g in regimes]
        left.bar([k + i * width for k in range(len(regimes))], values, width, label=arm)
    left.set_xticks([k + 0.4 - width / 2 for k in range(len(regimes))], regimes, rotation=15)
    left.set_ylabel("chars/s (B x T positions)")
    left.set_yscale("log")
    left.set_title("train_throughput.py")
    if arms:
        left.legend(fontsize=8)
    curves = (report.get("quality", {}).get("curves") or {}).get("arms") or {}
    for arm, data in curves.items():
        pts = data["points"]
        right.plot([p["train_s"] for p in pts], [p["val_loss"] for p in pts], marker="o", label=f"{arm} (carried)")
        right.plot([p["train_s"] for p in pts], [p["val_loss_windows"] for p in pts], ls="--",
                   label=f"{arm} (windows)")
    target = (report.get("quality", {}).get("curves") or {}).get("target")
    if target:
        right.axhline(target, color="grey", lw=0.8, ls=":")
    right.set_xlabel("training seconds")
    right.set_ylabel("val loss (nats/char, fp32)")
    right.set_title("time_to_quality.py")
    if curves:
        right.legend(fontsize=8)
    env = report["environment"]
    fig.suptitle(f"lyricdist GPU check {env['date']}: {env.get('gpu', 'CPU dry run')}, torch {env['torch']}"
                 + (f", cuDNN {env['cudnn']}" if env.get("cudnn") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def print_table(report: dict) -> None:
    env = report["environment"]
    print(f"\n== lyricdist GPU check, {env['date']}: {env.get('gpu', 'dry run on the CPU')}, torch {env['torch']}"
          + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}" if env.get("cudnn") else "") + " ==")
    for row in report.get("precision", []):
        if "error" in row:
            print(f"{row['shape']:28} ERROR {row['error']}")
            continue
        sync = row["sync_free"]
        sync_s = "n/a" if sync.get("ok") is None else ("ok" if sync["ok"] else "SYNC: " + sync.get("error", "")[:60])
        one = {True: "yes", False: "NO", None: "n/a"}[row["one_buffer"]]
        print(f"{row['shape']:28} {row['rnn_dtype']:4} one buffer: {one}; "
              f"{row['profile']['launches']} {'launches' if env['device'] == 'cuda' else 'ops'}/step; "
              f"{SYNC_STEPS} steps sync-free: {sync_s}")
        print(f"{'':28} {row['precision']}")
    print(f"tests/test_gpu.py: {report.get('tests', {}).get('summary', report.get('tests', {}).get('skipped'))}")
    for r in report.get("throughput", {}).get("rows") or []:
        print(f"  {r['regime']:16} {r['arm']:15} {r['precision']:4} {r['chars_per_s']:>14,.0f} chars/s "
              f"{r['ratio']:5.2f}x  scored {r['scored']:.1%}  {r['kernel'][:40]}")
    for row in ((report.get("quality", {}).get("curves") or {}).get("summary") or []):
        print(f"  ttq {row['arm']:9} steps {row['steps']:6d}  {row['chars_per_s']:>11,.0f} chars/s  final "
              f"{row['final_val_loss']:.4f} (windows {row['final_val_loss_windows']:.4f})  reached target: "
              f"{row['reached_target_s']}")
    for name in ("throughput", "quality"):
        phase = report.get(name, {})
        if phase.get("skipped") or phase.get("returncode") not in (0, None) or phase.get("timed_out_after_s"):
            print(f"{name}: {phase.get('skipped') or phase.get('stderr_tail', '')[-300:] or phase}")
    print(f"wrote {report['files']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="where the JSON and PNG go ($OUT)")
    p.add_argument("--dry-run", action="store_true", help="the same phases on the CPU, tiny (no CUDA needed)")
    p.add_argument("--shakespeare", default=None,
                   help="tinyshakespeare input.txt for the quality phase (default: .gpu/input.txt or ../shared)")
    p.add_argument("--budget-s", type=float, default=470.0, help="the whole check's seconds")
    args = p.parse_args()
    budget = Budget(args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU, or pass --dry-run", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    shakespeare = args.shakespeare or next((str(c) for c in (REPO / ".gpu" / "input.txt",
                                                              REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt")
                                            if c.is_file()), None)
    report: dict = {"environment": environment(device), "dry_run": args.dry_run}
    print(f"gpu check: {report['environment']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpora = prepare_corpora(work, None if args.dry_run else shakespeare)
        print("1. precision, kernels, one buffer, sync-free steps", flush=True)
        report["precision"] = precision_phase(DRY_SHAPES if args.dry_run else GPU_SHAPES, corpora["demo"], device,
                                              work / "runs")
        phases = [("tests", lambda: tests_phase(budget), 40),
                  ("throughput", lambda: throughput_phase(budget, work, args.dry_run), 60),
                  ("quality", lambda: quality_phase(budget, work, corpora, args.dry_run), 60 if not args.dry_run else 10)]
        for i, (name, phase, needs) in enumerate(phases, start=2):
            if budget.left() < needs:
                report[name] = {"skipped": f"out of time ({budget.left():.0f} s left of --budget-s {args.budget_s:g})"}
                continue
            print(f"{i}. {name} ({budget.left():.0f} s left)", flush=True)
            report[name] = phase()
    report["files"] = [str(out / "gpu_check.json"), str(out / "gpu_check.png")]
    report["png"] = write_png(out / "gpu_check.png", report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
