"""Metrics to OUT_DIR/metrics.jsonl always, and to Weights & Biases through accelerate's tracker.

Only the main process writes or talks to wandb. Without an explicit mode (tracking.mode, or WANDB_MODE) a run is
online when wandb has credentials -- WANDB_API_KEY, or the key `wandb login` stored -- and offline otherwise (synced
later with `wandb sync`); the start-up line says which and why. Secrets are never part of the logged config.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .config import RunConfig
from .fileio import atomic_write_bytes, atomic_write_text

SECRET_PATTERN = re.compile(r"(access_token|auth_token|secret|api_key|apikey|password)", re.IGNORECASE)
SECRET_ENV = ("WANDB_API_KEY", "GENIUS_ACCESS_TOKEN")
METRIC_KEYS = ("step", "train_loss", "val_loss", "val_bpc", "chars_per_sec", "lr", "wall_s")


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


def wandb_enabled(cfg) -> bool:
    """Whether a run logs to wandb at all (online or offline): cheap, asks wandb nothing, so every process may call it."""
    t = cfg.tracking
    return t.backend != "none" and t.mode != "disabled" and os.environ.get("WANDB_MODE") != "disabled"


def wandb_credentials() -> tuple[bool, str]:
    """(found, why): whether wandb finds credentials for its server (WANDB_BASE_URL, default api.wandb.ai) as wandb
    itself looks for them -- WANDB_API_KEY, an identity token file, the key `wandb login` stored in ~/.netrc (or
    $NETRC), a settings file -- through `wandb.login(prompt=False, verify=False)`, which wandb documents as the way
    to check for credentials without prompting. Nothing is parsed by hand, nothing is written when none is found,
    and the key is not checked against the server (wandb may print its "logged in as" line when one is found)."""
    import wandb

    try:
        if wandb.login(prompt=False, verify=False):
            return True, "wandb has credentials (WANDB_API_KEY or `wandb login`)"
    except Exception as e:  # noqa: BLE001 - a malformed key or netrc
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return False, f"wandb's credentials are unusable ({first}); fix them or run `wandb login --relogin`"
    return False, "no wandb credentials: run `wandb login` or set WANDB_API_KEY to log online"


def wandb_decision(cfg) -> tuple[str | None, str]:
    """(mode, why): the wandb mode to use (None when wandb is off) and the reason, for the start-up line.

    An explicit tracking.mode wins, then WANDB_MODE; otherwise online when wandb has credentials (see
    wandb_credentials; only the main process should ask), else offline."""
    t = cfg.tracking
    if t.backend == "none":
        return None, "tracking.backend is none"
    if t.mode == "disabled":
        return None, "tracking.mode is disabled"
    if t.mode:
        return t.mode, f"tracking.mode is {t.mode}"
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return (None if env == "disabled" else env), f"WANDB_MODE is {env}"
    found, why = wandb_credentials()
    return ("online" if found else "offline"), why


def wandb_mode(cfg) -> str | None:
    """The wandb mode to use, or None when wandb is off (see wandb_decision)."""
    return wandb_decision(cfg)[0]


SUMMARIES = {"val_loss": "min", "val_bpc": "min"}  # the run's summary shows the best validation figures, not the last


class Tracker:
    """metrics.jsonl and samples.jsonl always; the wandb run through accelerate when wandb is on (main process).

    Resuming (run_id and resume_step S from the trainer's saved state). The crashed process may have logged steps
    after S (to wandb and to metrics.jsonl) before it died; the resumed process logs S+1, S+2, ... again. wandb
    requires increasing steps: with a plain `resume="allow"` those steps would be dropped or, by wandb-core 0.31,
    renumbered past the old ones. So:

    - nothing past S in OUT_DIR's metrics.jsonl/samples.jsonl (a clean stop, or a finished run trained further):
      `resume="allow"` on the same run id; the history simply continues.
    - steps past S were logged (a crash): wandb's rewind, `resume_from="RUN_ID?_step=S"`, on the same run id. The
      run's history is truncated to steps <= S (the abandoned segment is kept by W&B as an archived run) and
      continues from S+1: one continuous history. Offline, wandb 0.31 records the rewind in the new .wandb file
      (the run record's branch_point) without contacting a server; `wandb sync` of the run's directories, in start
      order, applies it on the server.
    - online, when the server refuses the rewind (it is a preview feature some W&B deployments lack), the resumed
      history goes to a NEW run id whose config has `resumed_from: {run_id, step}` and whose history starts after
      S; the saved state then records the new id. Steps are never offset or renumbered.
    """

    def __init__(self, accelerator, cfg: RunConfig, out_dir: Path, run_id: str | None = None, resume_step: int = 0,
                 job_type: str = "train"):
        self.accelerator = accelerator
        self.cfg = cfg
        self.out_dir = out_dir
        self.main = accelerator.is_main_process
        self.metrics_path = out_dir / "metrics.jsonl"
        self.mode = None  # decided by the main process alone (it asks wandb for credentials)
        self.run = None
        self.run_id = run_id
        self.corpus_artifact: str | None = None
        self._started = time.monotonic()
        self._wall_offset = 0.0
        if not self.main:
            return
        logged_past_resume = self._truncate_metrics(resume_step)
        self._wall_offset = self._last_wall_s()
        self.mode, why = wandb_decision(cfg)
        print(f"wandb: {self.mode or 'off'} ({why})", file=sys.stderr)
        if self.mode is None:
            return
        t = cfg.tracking
        config = scrub(cfg.to_dict())
        corpus = getattr(cfg.data, "corpus", None)
        base = {
            "name": t.run_name or out_dir.resolve().name,
            "entity": t.entity,
            "tags": list(t.tags) or None,
            "group": t.group or (Path(corpus).resolve().name if corpus else None),
            "job_type": job_type,
            "mode": self.mode,
            "dir": str(out_dir),
        }
        if run_id and logged_past_resume:
            try:
                self._init(config, {**base, "id": run_id, "resume_from": f"{run_id}?_step={resume_step}"})
            except Exception as e:  # noqa: BLE001 - wandb raises several types; anything but a rewound run
                if self.mode != "online":
                    raise
                self.run_id = uuid.uuid4().hex[:12]
                print(
                    f"wandb: could not rewind run {run_id} to step {resume_step} ({type(e).__name__}: {e}); "
                    f"logging the resumed training to a new run {self.run_id} (config resumed_from points back)",
                    file=sys.stderr,
                )
                config = {**config, "resumed_from": {"run_id": run_id, "step": resume_step}}
                self._init(config, {**base, "id": self.run_id})
        else:
            self.run_id = run_id or uuid.uuid4().hex[:12]
            self._init(config, {**base, "id": self.run_id, **({"resume": "allow"} if run_id else {})})
        self.run = accelerator.get_tracker("wandb", unwrap=True)
        for key, summary in SUMMARIES.items():
            self.run.define_metric(key, summary=summary)
        self.corpus_artifact = self._log_corpus(getattr(cfg.data, "corpus", None))
        if self.mode == "offline":
            run_dir = self.run.dir.rsplit("/files", 1)[0]
            # A resumed run has one directory per segment; one `wandb sync` of all of them uploads them in order.
            target = f"{Path(run_dir).parent}/offline-run-*-{self.run_id}" if run_id else run_dir
            print(f"wandb: offline run in {run_dir}; upload it with `wandb sync {target}`", file=sys.stderr)

    def _init(self, config: dict, wandb_kwargs: dict) -> None:
        self.accelerator.init_trackers(self.cfg.tracking.project, config=config, init_kwargs={"wandb": wandb_kwargs})

    def _truncate_metrics(self, resume_step: int) -> bool:
        """On resume, forget lines the crashed run logged after the state it is resumed from.

        Returns whether there were any (a line cut short by the crash counts: it was being written after S)."""
        past = False
        for path in (self.metrics_path, self.out_dir / "samples.jsonl"):
            if not path.exists():
                continue
            keep = []
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        keep.append(line)
                    else:
                        past = True
                except json.JSONDecodeError:
                    past = True  # a line cut short by the crash
                    continue
            atomic_write_text(path, "".join(l + "\n" for l in keep))
        return past

    def _last_wall_s(self) -> float:
        """wall_s of the last kept metrics row: a resumed run's clock continues from there."""
        if not self.metrics_path.exists():
            return 0.0
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        last = json.loads(lines[-1]) if lines else {}
        return float(last.get("wall_s") or 0.0)

    def log(self, metrics: dict, step: int) -> None:
        """One metrics.jsonl row (and wandb history row). wall_s: seconds since training started (resumed runs
        continue their clock), for `lyricdist plot`'s curves against time."""
        if not self.main:
            return
        row = {k: metrics.get(k) for k in METRIC_KEYS}
        row.update(metrics)
        row["step"] = step
        row["wall_s"] = round(self._wall_offset + time.monotonic() - self._started, 3)
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

            columns = ["step", "primetext", "temperature", "text"]
            columns += ["artist"] if any("artist" in r for r in rows) else []  # an artist-conditioned model
            table = wandb.Table(columns=columns)
            for r in rows:
                table.add_data(*(r.get(c) for c in columns))
            self.run.log({"samples": table}, step=step)

    def _log_corpus(self, corpus: str | None) -> str | None:
        """The prepared training corpus as a dataset artifact, named in every model artifact, so that a memorisation
        check of a downloaded model can fetch the text it was trained on. Online it is the run's input (W&B lineage);
        offline wandb refuses inputs ("Cannot use artifact when in offline mode"), so it is logged as an output."""
        if corpus is None or not self.cfg.tracking.log_checkpoints or not (Path(corpus) / "meta.json").is_file():
            return None
        import wandb

        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"corpus-{Path(corpus).resolve().name}")
        artifact = wandb.Artifact(name, type="dataset", description="a `lyricdist prepare` corpus")
        artifact.add_dir(str(corpus))
        if self.mode == "offline":
            self.run.log_artifact(artifact)
        else:
            self.run.use_artifact(artifact)
        return name

    def log_checkpoint(self, path: Path, aliases: list[str], metadata: dict) -> None:
        if not self.main or self.run is None or not self.cfg.tracking.log_checkpoints:
            return
        import wandb

        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"model-{self.run_id}")
        if self.corpus_artifact:
            metadata = {**metadata, "corpus_artifact": self.corpus_artifact}
        artifact = wandb.Artifact(name, type="model", metadata=scrub(metadata))
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact, aliases=aliases)

    def log_curves(self) -> None:
        """The run's curves (`lyricdist plot` of metrics.jsonl) as a wandb image, when wandb is on (main process).

        A plot that cannot be drawn only warns: the trained checkpoints are what matters at this point."""
        if not self.main or self.run is None or not self.metrics_path.exists():
            return
        try:
            import wandb

            from .curves import read_metrics, render_png

            rows = read_metrics(self.out_dir)
            png = render_png({self.out_dir.resolve().name: rows}, title=self.out_dir.resolve().name)
            path = self.out_dir / "curves.png"
            atomic_write_bytes(path, png)
            self.run.log({"curves": wandb.Image(str(path), caption="lyricdist plot")}, step=rows[-1]["step"])
        except Exception as e:  # noqa: BLE001 - matplotlib/PIL/wandb failures are not the run's failure
            print(f"warning: could not log the curves image to wandb ({type(e).__name__}: {e})", file=sys.stderr)

    def finish(self) -> None:
        """Every process calls this: the curves image goes to wandb (main), accelerate finishes the trackers and
        tears down the process group."""
        self.log_curves()
        self.accelerator.end_training()
