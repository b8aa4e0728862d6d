"""The competent plain PyTorch loop that lyricdist's benchmarks measure against.

What a capable engineer writes by hand for a char-LSTM: `nn.LSTM` (cuDNN on a GPU, oneDNN on a CPU), the token
array moved to the device once, each batch one `randint` + gather of random windows (state zero every batch),
one-hot rows read from an identity table, Adam (fused on CUDA), gradient clipping, and a precision variant:
  fp32  plain fp32 (on a GPU with TF32 off)
  tf32  fp32 weights, TF32 tensor-core math (GPU)
  fp16  torch.autocast(float16) + GradScaler, as the PyTorch AMP recipe says (GPU; autocast runs cuDNN RNNs in fp16)
  bf16  torch.autocast(bfloat16) (no scaler; on CUDA autocast still runs the cuDNN RNN in fp16)
Parameter names match lyricdist's CharRNN (rnn, head, embed), so lyricdist's evaluator can score it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VARIANTS = ("fp32", "tf32", "fp16", "bf16")


class PlainLSTM(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, dropout: float = 0.0,
                 embedding_dim: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embedding_dim) if embedding_dim else None
        self.rnn = nn.LSTM(embedding_dim or vocab_size, hidden_size, num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        self.register_buffer("eye", torch.eye(vocab_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.embed(x) if self.embed is not None else self.eye[x]
        out, _ = self.rnn(inp)
        return self.head(self.drop(out))


class PlainLoop:
    """Random-window training of PlainLSTM on a token array; `step()` runs one optimizer step, no host syncs."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, hidden_size: int, num_layers: int, batch_size: int,
                 seq_len: int, device: torch.device, variant: str = "fp32", lr: float = 2e-3, grad_clip: float = 5.0,
                 dropout: float = 0.0, embedding_dim: int = 0, seed: int = 0):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        self.device, self.variant = torch.device(device), variant
        self.batch_size, self.seq_len, self.grad_clip = batch_size, seq_len, grad_clip
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = variant == "tf32"
            torch.backends.cudnn.allow_tf32 = variant == "tf32"
        self.data = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device)  # moved once
        self.window = torch.arange(seq_len + 1, device=self.device)
        self.model = PlainLSTM(vocab_size, hidden_size, num_layers, dropout, embedding_dim).to(self.device)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, **fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=variant == "fp16")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(variant)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def step(self) -> torch.Tensor:
        starts = torch.randint(0, len(self.data) - self.seq_len - 1, (self.batch_size, 1), device=self.device,
                               generator=self.gen)
        w = self.data[starts + self.window].long()  # one gather: [B, T+1]
        with self.autocast():
            logits = self.model(w[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten())
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.detach()

    @property
    def chars_per_step(self) -> int:
        return self.batch_size * self.seq_len
