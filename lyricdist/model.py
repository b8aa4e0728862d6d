"""The character-level recurrent language model (char-rnn / the original Keras LSTM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from jsonargparse.typing import NonNegativeInt, PositiveInt

from .errors import LyricdistError
from .options import FractionBelowOne, check_fields, plain_fields
from .precision import run_rnn

State = tuple[torch.Tensor, ...]  # (h, c) for an LSTM, (h,) for a GRU or plain RNN


@dataclass
class ModelConfig:
    """Model shape.

    Args:
        cell: recurrent cell: lstm, gru or rnn (tanh)
        num_layers: stacked recurrent layers
        hidden_size: units per layer
        dropout: dropout between layers and before the output head (0 = off)
        embedding_dim: size of a learned character embedding; 0 feeds one-hot vectors, as the original did
        artist_embedding_dim: size of an artist embedding fed at every step (0 = not artist-conditioned)
        artist_head: how the artist embedding also reaches the output head (conditioned models): none (the input
            only, as before); shift (an artist-dependent output bias: the top layer's output is shifted by a
            linear map of the embedding before the head); film (shifted and scaled per unit: a small artist
            adapter in the head). Both start as the identity and are linear in the embedding, so interpolated
            artists (collab --mode condition, sample --artist-mix) still mean something
    """

    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    num_layers: PositiveInt = 2
    hidden_size: PositiveInt = 128
    dropout: FractionBelowOne = 0.0
    embedding_dim: NonNegativeInt = 0
    artist_embedding_dim: NonNegativeInt = 0
    artist_head: Literal["none", "shift", "film"] = "none"

    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)

    def validate(self) -> None:
        """Ranges and choices come from the fields' types (lyricdist.options.check_fields); the head needs an
        artist embedding to read."""
        check_fields(self, "model.")
        if self.artist_head != "none" and self.artist_embedding_dim == 0:
            raise LyricdistError(f"model.artist_head={self.artist_head} needs an artist embedding: set "
                                 f"model.artist_embedding_dim (e.g. 16)")


_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, num_artists: int = 0):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.num_artists = num_artists
        self.embed = nn.Embedding(vocab_size, cfg.embedding_dim) if cfg.embedding_dim > 0 else None
        self.artist_embed = (
            nn.Embedding(max(num_artists, 1), cfg.artist_embedding_dim) if cfg.artist_embedding_dim > 0 else None
        )
        in_size = (cfg.embedding_dim or vocab_size) + cfg.artist_embedding_dim
        self.rnn = _CELLS[cfg.cell](
            in_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, vocab_size)
        # The artist at the head (model.artist_head): [shift | scale] of the top layer's output from the embedding,
        # zero-initialised so training starts from the input-only model.
        width = {"none": 0, "shift": 1, "film": 2}[cfg.artist_head] * cfg.hidden_size
        self.artist_out = nn.Linear(cfg.artist_embedding_dim, width) if width else None
        if self.artist_out is not None:
            nn.init.zeros_(self.artist_out.weight)
            nn.init.zeros_(self.artist_out.bias)
        self._eye: torch.Tensor | None = None

    def inputs(
        self, x: torch.Tensor, artist: torch.Tensor | None = None, artist_vec: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Input vectors [B, T, in]: the character (one-hot or embedded) and, if conditioned, the artist.

        `x` may be any integer dtype (the training batches keep the smallest that fits). `artist` is [B] (one artist
        per chunk, as the song-aligned batches give) or [B, T]. One-hot rows are read from a cached identity table
        in the RNN's dtype: no [B, T, V] int64 tensor and no float copy of it.
        """
        ids = x if x.dtype in (torch.int32, torch.int64) else x.int()
        if self.embed is not None:
            inp = self.embed(ids)
        else:
            inp = F.embedding(ids, self._one_hot_table(x.device))
        vec = self.artist_vectors(x, artist, artist_vec)
        if vec is not None:
            inp = torch.cat([inp, vec.to(inp.dtype)], dim=-1)
        return inp

    def artist_vectors(
        self, x: torch.Tensor, artist: torch.Tensor | None = None, artist_vec: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The artist embedding at every position [B, T, D] (None for an unconditioned model): `artist_vec` as
        given ([B, D] or [B, T, D]), else the rows of `artist` (artist 0 when neither is given)."""
        if self.artist_embed is None:
            return None
        if artist_vec is None:
            if artist is None:
                artist = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            artist_vec = self.artist_embed(artist.long())
        if artist_vec.dim() == 2:
            artist_vec = artist_vec[:, None, :].expand(x.shape[0], x.shape[1], -1)
        return artist_vec

    def _one_hot_table(self, device: torch.device) -> torch.Tensor:
        """The identity [V, V] in the RNN's dtype, built once per (size, dtype, device); not a parameter or buffer, so
        it is never saved, broadcast by DDP or updated."""
        dtype = self.rnn.weight_hh_l0.dtype  # the RNN's compute dtype (lyricdist.precision)
        t = self._eye
        if t is None or t.shape[0] != self.vocab_size or t.dtype != dtype or t.device != device:
            t = self._eye = torch.eye(self.vocab_size, dtype=dtype, device=device)
        return t

    def forward(
        self,
        x: torch.Tensor,
        state: Optional[State] = None,
        reset: Optional[torch.Tensor] = None,
        artist: Optional[torch.Tensor] = None,
        artist_vec: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, State]:
        """Logits [B, T, V] and the final state (in the RNN's dtype). `reset[b]` zeroes stream b's state first."""
        vec = self.artist_vectors(x, artist, artist_vec)
        inp = self.inputs(x, artist_vec=vec)
        if reset is not None and state is not None:
            keep = (~reset).to(state[0].dtype)[None, :, None]
            state = tuple(s * keep for s in state)
        out, new_state = self._rnn(inp, _to_rnn(state, self.cfg.cell))
        out = self.drop(out)
        if self.artist_out is not None:
            mod = self.artist_out(vec.to(self.artist_out.weight.dtype)).to(out.dtype)
            if self.cfg.artist_head == "film":
                shift, scale = mod.chunk(2, dim=-1)
                out = out * (1 + scale) + shift
            else:
                out = out + mod
        logits = self.head(out)
        return logits, _from_rnn(new_state)

    def _rnn(self, inp: torch.Tensor, state):
        """The recurrent layers: one fused kernel call in the RNN's own weight dtype, with autocast off.

        The weights' dtype is the compute dtype (see lyricdist.precision): PyTorch's autocast would run a cuDNN RNN
        in float16 whatever was asked, and casting weights per forward can leave the fused kernel.
        """
        out, new_state = run_rnn(self.rnn, inp, state)
        if not torch.is_autocast_enabled(out.device.type):
            out = out.to(self.head.weight.dtype)
        return out, new_state

    def zero_state(self, batch: int, device=None, dtype=None) -> State:
        shape = (self.cfg.num_layers, batch, self.cfg.hidden_size)
        n = 2 if self.cfg.cell == "lstm" else 1
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))


def _to_rnn(state: Optional[State], cell: str):
    if state is None:
        return None
    return (state[0], state[1]) if cell == "lstm" else state[0]


def _from_rnn(state) -> Optional[State]:
    if state is None:
        return None
    return tuple(state) if isinstance(state, tuple) else (state,)


def detach_state(state: Optional[State]) -> Optional[State]:
    return None if state is None else tuple(s.detach() for s in state)
