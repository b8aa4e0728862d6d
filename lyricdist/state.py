"""Resumable training state: accelerate's save_state (model, optimizer, scheduler, RNG, dataloaders) plus what it
does not know: the step and counters (JSON), each process's tensors (e.g. the carried hidden state) and the
full-precision weights of a module trained in 16 bits. Written to a temp directory and swapped in whole, so a kill
mid-save leaves the previous state. Both trainers use it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import LyricdistError
from .fileio import atomic_write_json, replace_dir
from .precision import flatten_rnn

STATE_DIR = "state"  # OUT_DIR/state: the resumable state of a run
STATE_INFO = "trainer_state.json"  # its counters (JSON); a state without it is not one
FULL_PRECISION_FILE = "rnn_fp32.safetensors"
EXACTNESS = {
    False: "exact on CPU (bitwise the weights of an uninterrupted run)",
    True: "same data order, optimizer, scaler and RNG state; on a GPU losses match an uninterrupted run only to "
    "about 1e-3 (cuDNN draws inter-layer dropout masks from its own unsaved state and its RNN backward is not "
    "deterministic)",
}


@dataclass
class SavedState:
    info: dict  # the trainer's counters, plus num_processes
    per_process: list[dict[str, torch.Tensor]] = field(default_factory=list)  # one dict per saved process, by rank
    full_precision: dict[str, torch.Tensor] = field(default_factory=dict)


def save_state(acc, state_dir: Path, info: dict, mine: dict[str, torch.Tensor],
               full_precision: dict[str, torch.Tensor]) -> None:
    """Collective: every process calls it. `mine` is this process's tensors; `info` and `full_precision` are the
    main process's."""
    tmp = state_dir.with_name(f".{state_dir.name}.tmp-{info.get('step', 0)}")
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    try:
        acc.save_state(str(tmp), safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in mine.items()},
                  str(tmp / f"hidden_{acc.process_index}.safetensors"))
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_file({k: v.detach().cpu().contiguous() for k, v in full_precision.items()},
                      str(tmp / FULL_PRECISION_FILE))
            atomic_write_json(tmp / STATE_INFO, {**info, "num_processes": acc.num_processes})
            replace_dir(tmp, state_dir)
    except BaseException:  # e.g. the disk filled up: the previous state stays, the partial one goes
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    acc.wait_for_everyone()


def load_state(acc, state_dir: Path, check=lambda info: None) -> SavedState:
    """Collective. `check(info)` may raise a LyricdistError (e.g. another vocabulary) before anything is loaded."""
    try:
        info = json.loads((state_dir / STATE_INFO).read_text(encoding="utf-8"))
        check(info)
        acc.load_state(str(state_dir))
        parts = [load_file(str(state_dir / f"hidden_{r}.safetensors")) for r in range(int(info["num_processes"]))]
        full: dict[str, torch.Tensor] = {}
        for name in (FULL_PRECISION_FILE, "model.safetensors"):  # states older than FULL_PRECISION_FILE: fp32 models
            if not full and (state_dir / name).is_file():
                full = load_file(str(state_dir / name))
    except (json.JSONDecodeError, KeyError, RuntimeError, OSError, ValueError) as e:
        raise LyricdistError(
            f"resumable state in {state_dir} is corrupted or does not match this model "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); start a new train.out_dir"
        ) from None
    if info["num_processes"] != acc.num_processes:
        acc.print(f"warning: resumed with {acc.num_processes} processes (saved with {info['num_processes']})")
    return SavedState(info, parts, full)


@torch.no_grad()
def restore_full_precision(module: torch.nn.Module, prefix: str, full: dict[str, torch.Tensor], masters) -> None:
    """Put the saved full-precision weights of `module` (keys `prefix` + name) into its fp32 masters (then round them
    into the 16-bit weights), or into the module itself when it trains in fp32. A weight missing from `full` keeps
    the value accelerate loaded: a master never stays at its fresh initialisation."""
    for name, p in module.named_parameters():
        target = masters.master_of(p) if masters else p
        target.copy_(full.get(prefix + name, p))
    if masters:
        masters.after_step()
    if isinstance(module, torch.nn.RNNBase):
        flatten_rnn(module)


def resplit(parts: list[dict[str, torch.Tensor]], lo: int, hi: int) -> tuple[torch.Tensor, ...] | None:
    """The hidden state of global streams lo..hi-1 from every saved process's share (streams are global, so a run
    may resume with another number of processes)."""
    if not parts or not parts[0]:
        return None
    return tuple(torch.cat([p[f"h{i}"] for p in parts], dim=1)[:, lo:hi] for i in range(len(parts[0])))
