"""Which dtype the recurrent layers compute in, chosen so that they stay one fused kernel (cuDNN / oneDNN).

Why this is not plain autocast: PyTorch's autocast runs cuDNN RNNs in float16 whatever the autocast dtype (with no
loss scaling under bf16), and an RNN called with weights cast on every forward leaves the fused kernel on some
stacks and runs one timestep at a time. So the RNN keeps its *own* flattened weights in the compute dtype and
runs with autocast off; an fp32 master copy of those weights (`MasterWeights`) takes the optimizer's updates; the
embedding, head and loss run under ordinary autocast. Which dtype a stack's fused kernel takes is not guessed from
version numbers: `rnn_kernel` counts the dispatched ops of a tiny forward+backward at two sequence lengths, and a
fused kernel is one whose op count does not grow with the sequence.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {v: k for k, v in DTYPES.items()}
# What each request may fall back to, best first: fp16 keeps a fused kernel (with loss scaling) where bf16 has none.
CANDIDATES = {"no": ["fp32"], "bf16": ["bf16", "fp16", "fp32"], "fp16": ["fp16", "fp32"]}
_RNN_OP_WORDS = ("rnn", "lstm", "gru")


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active (forward and backward), and remembers the RNN kernels' inputs."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.rnn_calls: list[tuple[str, list[torch.Tensor]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        self.ops[name] += 1
        if any(w in name for w in _RNN_OP_WORDS) and "backward" not in name:
            flat = []
            for a in args:
                flat.extend(a if isinstance(a, (list, tuple)) else [a])
            self.rnn_calls.append((name, [t for t in flat if isinstance(t, torch.Tensor)]))
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def rnn_kernels(self) -> list[str]:
        return sorted({n for n in self.ops if any(w in n for w in _RNN_OP_WORDS)})


def run_rnn(rnn: nn.RNNBase, inp, state=None):
    """Run `rnn` in its own weights' dtype with autocast off: the fused kernel on the module's own tensors."""
    dtype = rnn.weight_hh_l0.dtype
    with torch.autocast(_device_type(rnn.weight_hh_l0), enabled=False):
        if isinstance(inp, nn.utils.rnn.PackedSequence):
            inp = inp._replace(data=inp.data.to(dtype))
        else:
            inp = inp.to(dtype)
        if state is not None:
            state = tuple(s.to(dtype) for s in state) if isinstance(state, tuple) else state.to(dtype)
        return rnn(inp, state)


def _device_type(t: torch.Tensor) -> str:
    return t.device.type if t.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"


@functools.lru_cache(maxsize=None)
def rnn_kernel(cell: str, dtype_name: str, device: str) -> tuple[bool, str]:
    """(fused?, kernel names) for a `cell` RNN computing in `dtype_name` on `device`, forward and backward.

    Fused means the dispatched op count is the same at sequence lengths 4 and 8: the recurrence ran inside one
    kernel per layer rather than one op per timestep. A dtype the stack rejects outright counts as not fused.
    """
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
    dtype = DTYPES[dtype_name]
    counts, kernels = [], set()
    try:
        with torch.random.fork_rng(devices=[device] if device.startswith("cuda") else []):
            torch.manual_seed(0)
            rnn = cls(8, 16, num_layers=2, batch_first=True).to(device=device, dtype=dtype)
            rnn.flatten_parameters()
            for seq in (4, 8):
                x = torch.randn(2, seq, 8, device=device, dtype=dtype, requires_grad=True)
                with OpCounter() as c:
                    out, _ = rnn(x)
                    out.float().sum().backward()
                counts.append(c.total)
                kernels.update(c.rnn_kernels())
    except (RuntimeError, NotImplementedError) as e:
        return False, f"rejected ({str(e).strip().splitlines()[0][:80]})"
    fused = counts[0] == counts[1] and bool(kernels)
    return fused, ", ".join(sorted(kernels)) or "none"


@dataclass(frozen=True)
class Precision:
    """The dtypes of one run. rnn_dtype: the recurrent layers' weights and compute; autocast_dtype: everything else
    (None = fp32); loss scaling whenever the RNN computes in fp16."""

    rnn_dtype: torch.dtype
    kernel: str  # the RNN kernel the start-up check saw, e.g. aten._cudnn_rnn
    fused: bool
    note: str = ""  # why this differs from the request, if it does

    @property
    def name(self) -> str:
        return NAMES[self.rnn_dtype]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.rnn_dtype == torch.float32 else self.rnn_dtype

    @property
    def loss_scaling(self) -> bool:
        return self.rnn_dtype == torch.float16

    @property
    def low_precision(self) -> bool:
        return self.rnn_dtype != torch.float32

    def autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def describe(self) -> str:
        kernel = f"fused {self.kernel}" if self.fused else f"NOT fused ({self.kernel})"
        line = f"precision: RNN in {self.name} ({kernel})"
        if self.low_precision:
            line += f", rest under {self.name} autocast, fp32 master weights"
        if self.loss_scaling:
            line += ", dynamic loss scaling"
        return line + (f"; {self.note}" if self.note else "")


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: an Ampere or newer GPU, or a CPU with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(getattr(cpu, f, lambda: False)() for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False


def resolve_request(mixed_precision: str, device: torch.device) -> str:
    """`auto` becomes the launcher's setting (accelerate launch --mixed_precision), else bf16 on a device that
    computes it natively (the fused-kernel check then decides whether the RNN really runs in it), else fp32."""
    if mixed_precision != "auto":
        return mixed_precision
    env = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if env in CANDIDATES:
        return env
    return "bf16" if native_bf16(device) else "no"


def choose_precision(mixed_precision: str, device: torch.device, cell: str = "lstm") -> Precision:
    """The best dtype for `mixed_precision` whose RNN kernel is fused on this stack (checked once, cached)."""
    requested = resolve_request(mixed_precision, device)
    dev = str(device) if device.type != "cuda" else f"cuda:{device.index or 0}"
    rejected = []
    for name in CANDIDATES[requested]:
        fused, kernel = rnn_kernel(cell, name, dev)
        if fused or name == "fp32":
            note = ""
            if rejected:
                note = "fell back: " + "; ".join(rejected)
            if not fused:
                note = (note + "; " if note else "") + "no fused RNN kernel even in fp32 on this stack"
            return Precision(DTYPES[name], kernel, fused, note)
        rejected.append(f"{name} RNN is not fused here ({kernel})")
    raise AssertionError("unreachable: fp32 is always a candidate")


def cast_rnn(rnn: nn.RNNBase, dtype: torch.dtype) -> None:
    """Keep the recurrent weights in `dtype`, flattened for cuDNN (same Parameter objects, new storage)."""
    rnn.to(dtype)
    rnn.flatten_parameters()


def use_for_inference(model, device: str | torch.device, mixed_precision: str = "auto") -> Precision:
    """Sampling and evaluation follow the training rule: the RNN's weights become the dtype whose fused kernel
    runs here (no masters needed without an optimizer); the head stays fp32."""
    precision = choose_precision(mixed_precision, torch.device(device), model.cfg.cell)
    cast_rnn(model.rnn, precision.rnn_dtype)
    return precision


def masters_for(rnn: nn.RNNBase, precision: Precision) -> "MasterWeights | None":
    """Set a trainer's RNN up for `precision`: fp32 masters of its weights if it computes in 16 bits (taken
    before the cast), then its own weights in the compute dtype."""
    masters = MasterWeights(list(rnn.parameters())) if precision.low_precision else None
    cast_rnn(rnn, precision.rnn_dtype)
    return masters


def trained_params(params, masters: "MasterWeights | None") -> list[torch.Tensor]:
    """What the optimizer updates, in the model's parameter order: the masters in place of 16-bit RNN weights."""
    return [masters.master_of(p) if masters else p for p in params]


def full_precision_state(module: nn.Module, masters: "MasterWeights | None") -> dict[str, torch.Tensor]:
    """`module`'s state dict with the RNN's fp32 masters in place of its 16-bit compute weights."""
    state = module.state_dict(keep_vars=True)
    return {k: (masters.master_of(v) if masters else v).detach() for k, v in state.items()}


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   masters: "MasterWeights | None", clip):
    """One update after backward: gradients onto the masters, unscaled, clipped (`clip()` returns the norm), the
    step (skipped by the scaler on an overflow), then the masters back into the RNN. `optimizer` is the torch
    optimizer itself (a fused one takes the scaler's sync-free path)."""
    if masters:
        masters.to_masters()
    scaler.unscale_(optimizer)
    norm = clip()
    scaler.step(optimizer)
    scaler.update()
    if masters:
        masters.to_model()
    return norm


class MasterWeights:
    """fp32 master copies of a 16-bit RNN's weights: the optimizer updates these, the RNN computes on its own.

    After backward, `to_masters` moves the RNN's gradients onto the masters (in fp32); after the optimizer step,
    `to_model` writes the updated masters back into the RNN's flattened weight buffer, in place. One copy per
    optimizer step, none per forward.
    """

    def __init__(self, model_params: list[nn.Parameter]):
        self.model_params = list(model_params)
        self.masters = [nn.Parameter(p.detach().float().clone()) for p in self.model_params]
        self._by_id = {id(p): m for p, m in zip(self.model_params, self.masters)}
        self._grads: list[torch.Tensor | None] = [None] * len(self.masters)

    @torch.no_grad()
    def to_masters(self) -> None:
        for i, (p, m) in enumerate(zip(self.model_params, self.masters)):
            if p.grad is None:
                m.grad = None
                continue
            if self._grads[i] is None:  # fp32 gradient buffers kept across steps: no allocation per step
                self._grads[i] = torch.empty_like(m)
            m.grad = self._grads[i].copy_(p.grad)
            p.grad = None

    @torch.no_grad()
    def to_model(self) -> None:
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)

    def master_of(self, p: torch.Tensor) -> torch.Tensor:
        """The master of an RNN weight; any other tensor is its own."""
        return self._by_id.get(id(p), p)
