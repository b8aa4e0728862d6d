"""What `lyricdist train` costs before step 1: no tracker, UI or data-pipeline library is imported when it is off."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CONFIGS

HEAVY = ("wandb", "datasets", "ray", "gradio", "matplotlib", "pandas", "pyarrow", "sklearn", "lyricsgenius")

SCRIPT = """
import json, sys
from lyricdist.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_train_without_tracking_imports_no_heavy_library(demo_corpus, tmp_path):
    """`tracking.backend: none` trains after importing torch, accelerate, numpy and lyricdist's own modules only:
    wandb, datasets, ray, gradio and matplotlib each cost seconds of start-up on every rank."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "train", "--config", str(CONFIGS / "tiny.yaml"), f"--data.corpus={demo_corpus}",
         f"--train.out_dir={tmp_path / 'run'}", "--train.max_steps=1", "--train.eval_every=1",
         "--tracking.backend=none", "--samples.enabled=false"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and "torch" in result["modules"] and "lyricdist" in result["modules"]
    imported = sorted(set(HEAVY) & set(result["modules"]))
    assert not imported, f"lyricdist train with tracking off imported {imported}"
