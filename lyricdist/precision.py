"""Which dtype the recurrent layers compute in, chosen so that they stay one fused kernel (cuDNN / oneDNN) on one
weight buffer, and how 16-bit weights are trained: fp32 masters, fp32 gradients, fp32 all-reduce.

Why this is not plain autocast: PyTorch's autocast runs cuDNN RNNs in float16 whatever the autocast dtype (with no
loss scaling under bf16), and an RNN called with weights cast on every forward leaves the fused kernel on some
stacks and runs one timestep at a time. So the RNN keeps its *own* weights in the compute dtype, flattened into the
one buffer cuDNN reads (`flatten_rnn`: torch's own `flatten_parameters` silently skips bf16), and runs with autocast
off; the embedding, head and loss run under ordinary autocast.

Training 16-bit weights (`MasterWeights`): fp32 masters take the optimizer's updates; each micro-batch's 16-bit
gradient is added into an fp32 gradient buffer as soon as autograd produces it (Megatron's `main_grad`), and that
buffer is all-reduced in fp32 across processes, once per optimizer step. DDP never sees the 16-bit weights: it
buckets by dtype and would reduce them in 16 bits (up to W-1 roundings) after summing micro-batches in 16 bits.

Which dtype a stack's fused kernel takes is not guessed from version numbers: `rnn_kernel` runs the model's own
recurrent shape (input, hidden, layers, dropout, a realistic batch: cuDNN picks its algorithm from these), warms
up, and counts the dispatched ops of a forward+backward at three sequence lengths. A fused kernel is one whose op
count does not grow with the sequence. cuDNN runs bf16 RNNs from PyTorch 2.10 with cuDNN >= 9.13
(pytorch/pytorch#164411); older stacks reject it here and fall back to fp16 with loss scaling.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {v: k for k, v in DTYPES.items()}
# What each request may fall back to, best first: fp16 keeps a fused kernel (with loss scaling) where bf16 has none.
CANDIDATES = {"no": ["fp32"], "bf16": ["bf16", "fp16", "fp32"], "fp16": ["fp16", "fp32"]}
_RNN_OP_WORDS = ("rnn", "lstm", "gru")
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
PROBE_SEQ_LENS = (4, 8, 16)
PROBE_MAX_CPU_BATCH = 64  # oneDNN's kernel choice does not depend on the batch; a CPU probe stays cheap
# The warning cuDNN's RNN prints when the weights are not one buffer (it then copies every weight every forward).
NOT_ONE_BUFFER = "not part of single contiguous chunk of memory"
# The first PyTorch release whose cuDNN RNN takes bf16 (pytorch/pytorch#164411, needs cuDNN >= 9.13): the Docker
# image's base must be at least this (tests/test_launch.py checks the tag).
CUDNN_BF16_RNN_TORCH = (2, 10)
CUDNN_BF16_RNN_CUDNN = 91300


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
    """Run `rnn` in its own weights' dtype with autocast off: the fused kernel on the module's own tensors.

    One timestep of an fp32 RNN on a CPU in eval mode (generation: one character per call) runs PyTorch's native
    kernel instead of oneDNN's: there is no recurrence to fuse, and oneDNN reorders the weights on every call, which
    costs more than the step's arithmetic (2 x 256 on one CPU thread: half the characters per second of the native
    step, `scripts/bench/generate_speed.py`).
    """
    dtype = rnn.weight_hh_l0.dtype
    with torch.autocast(_device_type(rnn.weight_hh_l0), enabled=False):
        packed = isinstance(inp, nn.utils.rnn.PackedSequence)
        if packed:
            inp = inp._replace(data=inp.data.to(dtype))
        else:
            inp = inp.to(dtype)
        if state is not None:
            state = tuple(s.to(dtype) for s in state) if isinstance(state, tuple) else state.to(dtype)
        one_step = (not packed and not rnn.training and dtype == torch.float32 and inp.device.type == "cpu"
                    and inp.dim() == 3 and inp.shape[1 if rnn.batch_first else 0] == 1)
        with _native_cpu_kernel() if one_step else contextlib.nullcontext():
            return rnn(inp, state)


@contextlib.contextmanager
def _native_cpu_kernel():
    """oneDNN off for the block (torch's own flag, restored after; no warning as torch.backends.mkldnn.flags gives)."""
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


def _device_type(t: torch.Tensor) -> str:
    return t.device.type if t.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"


# ---- one weight buffer -------------------------------------------------------------------------------------------
def flatten_rnn(rnn: nn.RNNBase) -> None:
    """Put a CUDA RNN's weights into the one buffer, in cuDNN's layout, that its fused kernel reads, in any dtype.

    `nn.RNNBase.flatten_parameters` does this only for the dtypes `torch.backends.cudnn.is_acceptable` lists (half,
    float, double): for bf16 it silently returns, and cuDNN then warns on every forward and copies every weight into
    a fresh buffer (the `!weight_buf.defined()` branch of `_cudnn_rnn`). The op underneath,
    `torch._cudnn_rnn_flatten_weight`, takes bf16; this calls it as flatten_parameters would. Elsewhere (CPU: oneDNN
    reorders weights itself) it does nothing. The Parameters stay the same objects, with new storage.
    """
    weights = rnn._flat_weights
    if not weights or not all(isinstance(w, torch.Tensor) and w.is_cuda for w in weights):
        return
    if not (torch.backends.cudnn.enabled and torch.backends.cudnn.is_available()):
        return
    if len({w.dtype for w in weights}) != 1 or len({w.data_ptr() for w in weights}) != len(weights):
        return  # mixed dtypes or aliased weights: torch's copying path, as flatten_parameters leaves it
    import torch.backends.cudnn.rnn as cudnn_rnn

    num_weights = (4 if rnn.bias else 2) + (1 if rnn.proj_size > 0 else 0)
    with torch.cuda.device_of(weights[0]), torch.no_grad():
        if torch._use_cudnn_rnn_flatten_weight():
            torch._cudnn_rnn_flatten_weight(weights, num_weights, rnn.input_size, cudnn_rnn.get_cudnn_mode(rnn.mode),
                                            rnn.hidden_size, rnn.proj_size, rnn.num_layers, rnn.batch_first,
                                            bool(rnn.bidirectional))


def weights_in_one_buffer(rnn: nn.RNNBase) -> bool:
    """Whether every recurrent weight lives in one storage (what cuDNN needs to run on the weights in place)."""
    return len({w.untyped_storage().data_ptr() for w in rnn._flat_weights}) == 1


def check_one_buffer(rnn: nn.RNNBase, where: str) -> None:
    """On CUDA, fail loudly if the weights left their buffer: every forward would copy them (a bug, not a setting)."""
    if rnn.weight_hh_l0.is_cuda and torch.backends.cudnn.enabled and not weights_in_one_buffer(rnn):
        raise RuntimeError(f"{where}: the RNN's {NAMES.get(rnn.weight_hh_l0.dtype)} weights are not in one buffer, "
                           f"so cuDNN would copy them every forward; please report this with your torch version")


def cast_rnn(rnn: nn.RNNBase, dtype: torch.dtype) -> None:
    """Keep the recurrent weights in `dtype`, in one buffer for cuDNN (same Parameter objects, new storage)."""
    rnn.to(dtype)
    flatten_rnn(rnn)


# ---- the kernel probe --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RNNShape:
    """The recurrent layers the probe runs: the model's own, at the batch one step runs. cuDNN picks its algorithm
    from these (a persistent kernel for small hidden sizes and batches, the standard one for the presets), and bf16
    and dropout support differ between its algorithms: a toy shape would check another kernel than training uses."""

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int
    dropout: float
    batch: int

    @classmethod
    def of(cls, rnn: nn.RNNBase, batch: int) -> "RNNShape":
        cell = {"LSTM": "lstm", "GRU": "gru"}.get(rnn.mode, "rnn")
        return cls(cell, rnn.input_size, rnn.hidden_size, rnn.num_layers, float(rnn.dropout), max(1, int(batch)))


@dataclass(frozen=True)
class KernelCheck:
    """What the probe saw for one dtype: fused?, the RNN kernels dispatched, the op counts at PROBE_SEQ_LENS, and
    (CUDA) whether the weights stayed in one buffer."""

    fused: bool
    kernels: str
    counts: tuple[int, ...] = ()
    one_buffer: bool = True


@functools.lru_cache(maxsize=None)
def rnn_kernel(shape: RNNShape, dtype_name: str, device: str) -> KernelCheck:
    """Probe a `shape` RNN computing in `dtype_name` on `device` (forward and backward, in training mode).

    Fused means the op count does not grow with the sequence: fewer than one extra op per extra timestep from 4 to
    8 and from 8 to 16 (an unfused RNN dispatches several per timestep and layer; small constant differences, such
    as a workspace allocated at one length only, do not count). A first run warms up (cuDNN handles, the dropout
    state, workspaces). A dtype the stack rejects, or whose weights cannot stay in one buffer, counts as not fused.
    The global random state is left as it was.
    """
    cls, dtype = _CELLS[shape.cell], DTYPES[dtype_name]
    cuda = device.startswith("cuda")
    batch = shape.batch if cuda else min(shape.batch, PROBE_MAX_CPU_BATCH)
    counts, kernels = [], set()
    try:
        with torch.random.fork_rng(devices=[device] if cuda else []), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.manual_seed(0)
            rnn = cls(shape.input_size, shape.hidden_size, num_layers=shape.num_layers, batch_first=True,
                      dropout=shape.dropout if shape.num_layers > 1 else 0.0).to(device=device, dtype=dtype).train()
            flatten_rnn(rnn)

            def step(seq: int) -> None:
                x = torch.randn(batch, seq, shape.input_size, device=device, dtype=dtype, requires_grad=True)
                out, _ = rnn(x)
                out.float().sum().backward()

            step(PROBE_SEQ_LENS[0])  # warm-up
            for seq in PROBE_SEQ_LENS:
                with OpCounter() as c:
                    step(seq)
                counts.append(c.total)
                kernels.update(c.rnn_kernels())
            one_buffer = not cuda or weights_in_one_buffer(rnn)
            one_buffer = one_buffer and not any(NOT_ONE_BUFFER in str(w.message) for w in seen)
    except (RuntimeError, NotImplementedError) as e:
        return KernelCheck(False, f"rejected ({str(e).strip().splitlines()[0][:80]})")
    names = ", ".join(sorted(kernels)) or "none"
    lens = PROBE_SEQ_LENS
    growth = max((counts[i + 1] - counts[i]) / (lens[i + 1] - lens[i]) for i in range(len(lens) - 1))
    if not one_buffer:
        return KernelCheck(False, f"{names}, weights copied every forward", tuple(counts), False)
    return KernelCheck(bool(kernels) and growth < 1, names, tuple(counts), one_buffer)


@dataclass(frozen=True)
class Precision:
    """The dtypes of one run. rnn_dtype: the recurrent layers' weights and compute; autocast_dtype: everything else
    (None = fp32); loss scaling whenever the RNN computes in fp16."""

    rnn_dtype: torch.dtype
    kernel: str  # the RNN kernel the start-up check saw, e.g. aten._cudnn_rnn
    fused: bool
    note: str = ""  # why this differs from the request, if it does
    request: str = ""  # what was asked for, after `auto` was resolved (the fallback order starts there)

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
            line += f", rest under {self.name} autocast, fp32 master weights and gradients"
        if self.loss_scaling:
            line += ", dynamic loss scaling"
        return line + (f"; {self.note}" if self.note else "")


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: an Ampere or newer GPU, or a CPU with AMX or AVX512-BF16.

    `torch.cuda.is_bf16_supported()` alone also says yes on V100/T4, where bf16 is emulated (slowly, and cuDNN has
    no bf16 RNN there): only native support counts."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3: no emulation check; compute capability 8.0 (Ampere) is where bf16 is native
            return torch.cuda.get_device_capability(device)[0] >= 8
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


def _device_key(device: torch.device) -> str:
    return str(device) if device.type != "cuda" else f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


def choose_precision(mixed_precision: str, device: torch.device, shape: RNNShape,
                     failed: tuple[tuple[str, str], ...] = ()) -> Precision:
    """The best dtype for `mixed_precision` whose RNN kernel is fused at `shape` on this stack (probed once per
    shape, cached). `failed`: (dtype, why) pairs already ruled out, e.g. by a failing first training step."""
    requested = resolve_request(mixed_precision, device)
    rejected = [f"{name} {why}" for name, why in failed]
    ruled_out = {name for name, _ in failed}
    for name in CANDIDATES[requested]:
        if name in ruled_out and name != "fp32":
            continue
        check = rnn_kernel(shape, name, _device_key(device))
        if check.fused or name == "fp32":
            note = "fell back: " + "; ".join(rejected) if rejected else ""
            if not check.fused:
                note = (note + "; " if note else "") + "no fused RNN kernel even in fp32 on this stack"
            return Precision(DTYPES[name], check.kernels, check.fused, note, requested)
        rejected.append(f"{name} RNN is not fused here ({check.kernels})")
    raise AssertionError("unreachable: fp32 is always a candidate")


def use_for_inference(model, device: str | torch.device, mixed_precision: str = "auto", batch: int = 8) -> Precision:
    """Generation (sample, collab, the app) follows the training rule on a GPU: the RNN's weights become the dtype
    whose fused kernel runs there (no masters needed without an optimizer); the head stays fp32. On a CPU, `auto` is
    fp32: generation runs one character per call, where oneDNN's fused kernel gains nothing and PyTorch's native
    fp32 step is the fastest (see run_rnn); an explicit bf16 request is still honoured."""
    device = torch.device(device)
    if mixed_precision == "auto" and device.type == "cpu":
        mixed_precision = "no"
    precision = choose_precision(mixed_precision, device, RNNShape.of(model.rnn, batch))
    cast_rnn(model.rnn, precision.rnn_dtype)
    return precision


# ---- training 16-bit weights -------------------------------------------------------------------------------------
def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class MasterWeights:
    """fp32 masters of a 16-bit RNN's weights and their fp32 gradients; the optimizer updates the masters.

    Both are views of one flat fp32 buffer each: one broadcast makes every process start from rank 0's weights,
    one all-reduce per optimizer step sums the gradients. A hook on each 16-bit weight adds its gradient into the
    fp32 buffer the moment autograd has it and drops the 16-bit one, so micro-batches of `grad_accum` are summed
    in fp32 too. The 16-bit weights are kept out of DDP (`keep_out_of_ddp`), which would reduce them in 16 bits.
    `after_step` writes the updated masters back into the RNN's weight buffer, in place: one copy per optimizer
    step, none per forward.
    """

    def __init__(self, model_params: list[nn.Parameter]):
        self.model_params = list(model_params)
        sizes = [p.numel() for p in self.model_params]
        device = self.model_params[0].device
        self.flat = torch.empty(sum(sizes), dtype=torch.float32, device=device)
        self.flat_grad = torch.zeros(sum(sizes), dtype=torch.float32, device=device)
        self.masters: list[nn.Parameter] = []
        self.grads: list[torch.Tensor] = []
        with torch.no_grad():
            for p, view, grad in zip(self.model_params, self.flat.split(sizes), self.flat_grad.split(sizes)):
                view.copy_(p.detach().reshape(-1))
                self.masters.append(nn.Parameter(view.view_as(p)))
                self.grads.append(grad.view_as(p))
        self._by_id = {id(p): m for p, m in zip(self.model_params, self.masters)}
        self._hooks = [p.register_post_accumulate_grad_hook(self._accumulate(g))
                       for p, g in zip(self.model_params, self.grads)]

    @staticmethod
    def _accumulate(main_grad: torch.Tensor):
        @torch.no_grad()
        def hook(p: torch.Tensor) -> None:
            main_grad.add_(p.grad)  # upcast into the fp32 sum; the 16-bit gradient never accumulates
            p.grad = None
        return hook

    @torch.no_grad()
    def sync_from_main(self) -> None:
        """Every process takes the main process's masters (and so RNN weights), whatever each drew at init."""
        if _world_size() > 1:
            torch.distributed.broadcast(self.flat, src=0)
        self.after_step()

    def keep_out_of_ddp(self, root: nn.Module) -> bool:
        """Tell DDP to leave the 16-bit weights to us. False when nothing else in `root` trains (DDP would then have
        no parameter and refuses to wrap): prepare the model without DDP then."""
        ids = {id(p) for p in self.model_params}
        names = [n for n, p in root.named_parameters() if id(p) in ids]
        others = [p for p in root.parameters() if id(p) not in ids and p.requires_grad]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(root, names)
        return bool(others)

    @torch.no_grad()
    def to_masters(self) -> None:
        """The summed fp32 gradients onto the masters, averaged over processes (in fp32) as DDP averages."""
        world = _world_size()
        if world > 1:
            torch.distributed.all_reduce(self.flat_grad)
            self.flat_grad.div_(world)
        for m, g in zip(self.masters, self.grads):
            m.grad = g

    @torch.no_grad()
    def after_step(self) -> None:
        """Masters back into the RNN's own weights (rounded to its dtype, in place), gradients cleared."""
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)
        self.flat_grad.zero_()

    def zero_grad(self) -> None:
        self.flat_grad.zero_()

    def master_of(self, p: torch.Tensor) -> torch.Tensor:
        """The master of an RNN weight; any other tensor is its own."""
        return self._by_id.get(id(p), p)


def masters_for(model: nn.Module, rnn: nn.RNNBase, precision: Precision) -> MasterWeights | None:
    """Set a trainer's RNN up for `precision` (call before accelerate's prepare): for 16-bit compute, fp32 masters
    of its weights (taken before the cast, then made rank 0's on every process), kept out of DDP; then its own
    weights in the compute dtype, in one buffer. Returns None for fp32 (DDP reduces fp32 weights as they are)."""
    masters = MasterWeights(list(rnn.parameters())) if precision.low_precision else None
    cast_rnn(rnn, precision.rnn_dtype)
    if masters:
        masters.sync_from_main()
        masters.keep_out_of_ddp(model)
    return masters


class MixedPrecision:
    """What training one model's RNN in its precision takes, as one object: the dtype chosen by the probe at the
    RNN's real shape, fp32 masters and gradients for 16-bit compute, the loss scaler for fp16, the optimizer step
    that ties them together, and a fallback when the first real step fails. `state_dict` is the scaler's (the
    masters are saved as the full-precision weights, `full_precision_state`). Call before accelerate's prepare."""

    def __init__(self, acc, model: nn.Module, rnn: nn.RNNBase, request: str, batch: int):
        self.acc, self.rnn, self.request = acc, rnn, request
        self.shape = RNNShape.of(rnn, batch)
        self.precision = choose_precision(request, acc.device, self.shape)
        acc.print(self.precision.describe())
        self.masters = masters_for(model, rnn, self.precision)
        self._use()

    def _use(self) -> None:
        self.scaler = torch.amp.GradScaler(self.acc.device.type, enabled=self.precision.loss_scaling)
        if self.acc.device.type == "cuda" and not self.precision.low_precision:  # fp32 weights: TF32 tensor cores
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.rnn_dtype

    def autocast(self):
        return self.precision.autocast(self.acc.device)

    def trained_params(self, params) -> list[torch.Tensor]:
        return trained_params(params, self.masters)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss)

    def step(self, optimizer, clip):
        """One update after backward (see optimizer_step); returns the gradient norm `clip()` gave."""
        return optimizer_step(getattr(optimizer, "optimizer", optimizer), self.scaler, self.masters, clip)

    def full_precision_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        return full_precision_state(module, self.masters)

    def state_dict(self) -> dict:
        return {"grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])

    def guard_first_step(self, trial) -> bool:
        """Run `trial()` (the first real batch forward and backward, outside DDP, random state forked): a 16-bit
        kernel that passed the probe but fails on the real model falls back now (the next candidate, the same
        one-line message) instead of crashing the run at step 1. Returns whether the dtype changed."""
        failed: list[tuple[str, str]] = []
        while self.precision.low_precision:
            try:
                with torch.random.fork_rng(devices=[self.acc.device] if self.acc.device.type == "cuda" else []):
                    trial()
                return bool(failed)
            except (RuntimeError, NotImplementedError) as e:
                if self.precision.name in {name for name, _ in failed}:
                    raise
                first_line = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
                failed.append((self.precision.name, f"failed in the first training step ({type(e).__name__}: "
                                                    f"{first_line})"))
                self.precision = choose_precision(self.request, self.acc.device, self.shape, tuple(failed))
                self.acc.print(self.precision.describe())
                cast_rnn(self.rnn, self.precision.rnn_dtype)
                self.masters.after_step()  # the masters, rounded to the new dtype, back into the weights
                self._use()
            finally:
                if self.masters:
                    self.masters.zero_grad()
        return bool(failed)


def trained_params(params, masters: MasterWeights | None) -> list[torch.Tensor]:
    """What the optimizer updates, in the model's parameter order: the masters in place of 16-bit RNN weights."""
    return [masters.master_of(p) if masters else p for p in params]


def full_precision_state(module: nn.Module, masters: MasterWeights | None) -> dict[str, torch.Tensor]:
    """`module`'s state dict with the RNN's fp32 masters in place of its 16-bit compute weights."""
    state = module.state_dict(keep_vars=True)
    return {k: (masters.master_of(v) if masters else v).detach() for k, v in state.items()}


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   masters: MasterWeights | None, clip):
    """One update after backward: fp32 gradients onto the masters (all-reduced), unscaled, clipped (`clip()` returns
    the norm), the step (skipped by the scaler on an overflow), then the masters back into the RNN. `optimizer` is
    the torch optimizer itself (a fused one takes the scaler's sync-free path)."""
    if masters:
        masters.to_masters()
    scaler.unscale_(optimizer)
    norm = clip()
    scaler.step(optimizer)
    scaler.update()
    if masters:
        masters.after_step()
    return norm
