"""torchrun worker of tests/test_precision.py: one gloo process of a bf16-forced trainer (whatever the CPU).

    precision_worker.py grads CORPUS OUT   each rank's micro-batch bf16 gradients and the masters' fp32 gradient
                                           of one step (grad_accum 2) -> OUT/grads_RANK.safetensors
    precision_worker.py sync CORPUS OUT    ranks initialise their models differently; the masters and weights after
                                           set-up and after one step -> OUT/sync_RANK.safetensors
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's helpers

from conftest import forced_precision, tiny_config  # noqa: E402

import lyricdist.precision as precision  # noqa: E402
import lyricdist.train as train_module  # noqa: E402

QUIET = ["--samples.enabled=false", "--tracking.backend=none", "--model.hidden_size=48", "--model.num_layers=2"]


def main(mode: str, corpus: str, out: str) -> None:
    precision.choose_precision = forced_precision("bf16")
    rank = int(os.environ["RANK"])
    if mode == "sync":
        class PerRankInit(train_module.CharRNN):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                gen = torch.Generator().manual_seed(1000 + rank)
                with torch.no_grad():
                    for p in self.parameters():
                        p.copy_(torch.randn(p.shape, generator=gen) * 0.1)

        train_module.CharRNN = PerRankInit
    cfg = tiny_config(Path(corpus), Path(out) / "run", *QUIET, "--train.batch_size=8", "--train.grad_accum=2",
                      "--train.mixed_precision=bf16")
    trainer = train_module.Trainer(cfg)
    model = trainer.acc.unwrap_model(trainer.model)
    rnn = model.rnn
    tensors: dict[str, torch.Tensor] = {}
    if mode == "grads":
        micro: dict[str, list[torch.Tensor]] = {n: [] for n, _ in rnn.named_parameters()}
        for name, p in rnn.named_parameters():
            p.register_hook(lambda g, name=name: micro[name].append(g.detach().clone()))

        def capture(opt, args, kwargs):
            for name, p in rnn.named_parameters():
                tensors[f"master.{name}"] = trainer.masters.master_of(p).grad.clone()

        trainer.optimizer.optimizer.register_step_pre_hook(capture)
        trainer.train_step()
        for name, parts in micro.items():
            assert len(parts) == 2, (name, len(parts))
            for m, g in enumerate(parts):
                tensors[f"micro{m}.{name}"] = g
    else:
        for when in ("setup", "step1"):
            for name, p in model.named_parameters():
                tensors[f"{when}.{name}"] = p.detach().clone()
            for name, p in rnn.named_parameters():
                tensors[f"master.{when}.{name}"] = trainer.masters.master_of(p).detach().clone()
            if when == "setup":
                trainer.train_step()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(Path(out) / f"{mode}_{rank}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
