"""Metrics to OUT_DIR/metrics.jsonl always, and to Weights & Biases through accelerate's tracker.

Only the main process writes or talks to wandb. Without WANDB_API_KEY and without an explicit mode the run
is offline (synced later with `wandb sync`). Secrets are never part of the logged config.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from .config import RunConfig
from .fileio import atomic_write_text

SECRET_PATTERN = re.compile(r"(access_token|auth_token|secret|api_key|apikey|password)", re.IGNORECASE)
SECRET_ENV = ("WANDB_API_KEY", "GENIUS_ACCESS_TOKEN")
METRIC_KEYS = ("step", "train_loss", "val_loss", "val_bpc", "chars_per_sec", "lr")


def scrub(obj: Any) -> Any:
    """Redact the values of secret-looking keys and any value containing a secret from the environment."""
    secrets = {os.environ[k] for k in SECRET_ENV if os.environ.get(k)}
    if isinstance(obj, dict):
        return {k: "<redacted>" if SECRET_PATTERN.search(str(k)) else scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str) and any(s and s in obj for s in secrets):
        return "<redacted>"
    return obj


def wandb_mode(cfg: RunConfig) -> str | None:
    """The wandb mode to use, or None when wandb is off."""
    t = cfg.tracking
    if t.backend == "none" or t.mode == "disabled":
        return None
    if t.mode:
        return t.mode
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return None if os.environ["WANDB_MODE"] == "disabled" else os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    def __init__(self, accelerator, cfg: RunConfig, out_dir: Path, run_id: str | None = None, resume_step: int = 0):
        self.accelerator = accelerator
        self.cfg = cfg
        self.out_dir = out_dir
        self.main = accelerator.is_main_process
        self.metrics_path = out_dir / "metrics.jsonl"
        self.mode = wandb_mode(cfg)
        self.run = None
        self.run_id = run_id
        if not self.main:
            return
        self._truncate_metrics(resume_step)
        if self.mode is None:
            return
        self.run_id = run_id or uuid.uuid4().hex[:12]
        t = cfg.tracking
        accelerator.init_trackers(
            t.project,
            config=scrub(cfg.to_dict()),
            init_kwargs={
                "wandb": {
                    "name": t.run_name or out_dir.resolve().name,
                    "entity": t.entity,
                    "tags": list(t.tags) or None,
                    "mode": self.mode,
                    "dir": str(out_dir),
                    "id": self.run_id,
                    "resume": "allow",
                }
            },
        )
        self.run = accelerator.get_tracker("wandb", unwrap=True)
        if self.mode == "offline":
            print(
                f"wandb: offline run in {self.run.dir.rsplit('/files', 1)[0]}; upload it with "
                f"`wandb sync {self.run.dir.rsplit('/files', 1)[0]}`",
                file=sys.stderr,
            )

    def _truncate_metrics(self, resume_step: int) -> None:
        """On resume, forget lines the crashed run logged after the state it is resumed from."""
        for path in (self.metrics_path, self.out_dir / "samples.jsonl"):
            if not path.exists():
                continue
            keep = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the crash
            atomic_write_text(path, "".join(l + "\n" for l in keep))

    def log(self, metrics: dict, step: int) -> None:
        if not self.main:
            return
        row = {k: metrics.get(k) for k in METRIC_KEYS}
        row.update(metrics)
        row["step"] = step
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.run is not None:
            self.accelerator.log({k: v for k, v in row.items() if v is not None and k != "step"}, step=step)

    def log_samples(self, rows: list[dict], step: int) -> None:
        """rows: dicts with step, primetext, temperature, text. One wandb Table per evaluation."""
        if not self.main:
            return
        with open(self.out_dir / "samples.jsonl", "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        if self.run is not None:
            import wandb

            table = wandb.Table(columns=["step", "primetext", "temperature", "text"])
            for r in rows:
                table.add_data(r["step"], r["primetext"], r["temperature"], r["text"])
            self.run.log({"samples": table}, step=step)

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: dict) -> None:
        if not self.main or self.run is None or not self.cfg.tracking.log_checkpoints:
            return
        import wandb

        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"model-{self.run_id}")
        artifact = wandb.Artifact(name, type="model", metadata=scrub(metadata))
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact, aliases=aliases)

    def finish(self) -> None:
        """Every process calls this: accelerate finishes the trackers (main) and tears down the process group."""
        self.accelerator.end_training()
