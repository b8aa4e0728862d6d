"""`LyricsModel`: a trained lyricdist model for Python users, on huggingface_hub's PyTorchModelHubMixin.

    from lyricdist import LyricsModel

    model = LyricsModel.from_pretrained("hf:me/lyrics")        # or "me/lyrics", "hf:me/lyrics@v1", a checkpoint
                                                               # directory, a run's out_dir, wandb:ENTITY/PROJECT/NAME
    print(model.generate("the river ", length=300, temperature=0.8, seed=0))
    model.save_pretrained("my-checkpoint")                     # a lyricdist checkpoint directory
    model.push_to_hub("me/lyrics-copy")                        # private by default, as `lyricdist push`

The model carries its vocabulary (vocab.json) and its checkpoint's config.json, so generation needs nothing else,
and `generate` gives the same text as `lyricdist sample` for the same settings and seed. Every reference is
resolved by lyricdist.refs, as for the command line (one download cache, the same one-line errors); what is saved
or pushed is a lyricdist checkpoint (model.safetensors, config.json, vocab.json) with lyricdist's model card, so
`lyricdist sample hf:...` reads what `push_to_hub` wrote and `from_pretrained` reads what `lyricdist push` wrote.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin

from . import push as hub_push
from . import refs
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, portable_state, resolve_checkpoint_dir
from .errors import LyricdistError
from .fileio import atomic_write_bytes, atomic_write_json
from .model import CharRNN, ModelConfig
from .vocab import Vocab


class LyricsModel(torch.nn.Module, PyTorchModelHubMixin, library_name="lyricdist", pipeline_tag="text-generation",
                  tags=["lyricdist", "char-rnn", "lyrics"]):
    """A character-level lyric generator with its vocabulary.

    Args:
        config: the checkpoint's config.json (model shape, vocabulary size, artists, training figures)
        vocab: the checkpoint's vocab.json (the characters, in id order)
    """

    def __init__(self, config: dict, vocab: dict):
        super().__init__()
        model = dict(config.get("model") or {})
        known = set(ModelConfig.__dataclass_fields__)
        self.vocab = Vocab.from_json(vocab)
        self.artists: list[str] = list(config.get("artists") or [])
        self.net = CharRNN(ModelConfig(**{k: v for k, v in model.items() if k in known}), len(self.vocab),
                           num_artists=int(config.get("num_artists", 0)))
        self.checkpoint_config = dict(config)

    # ---- loading ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, revision: str | None = None,
                        token: str | bool | None = None, cache_dir: str | Path | None = None,
                        force_download: bool = False, local_files_only: bool = False,
                        **model_kwargs) -> "LyricsModel":
        """Load a checkpoint: `hf:USER/REPO[@REVISION]` or a plain Hub id `USER/REPO` (downloaded with
        huggingface_hub into its cache; `revision`, `token`, `cache_dir`, `force_download` and `local_files_only` as
        in huggingface_hub), `wandb:ENTITY/PROJECT/NAME[:ALIAS]`, a checkpoint directory or a run's out_dir (its
        best, else last). `map_location` (default cpu) places the weights."""
        ref = str(pretrained_model_name_or_path)
        download = dict(token=token, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only)
        if not Path(ref).exists() and not ref.startswith(refs.WANDB_PREFIX):
            spec = ref[len(refs.HF_PREFIX):] if ref.startswith(refs.HF_PREFIX) else ref
            repo_id, pinned = refs.parse_hf(spec)
            rev = revision or pinned
            local = refs._from_hf(repo_id + (f"@{rev}" if rev else ""), **download)
            refs._verify(local, f"hf:{spec}")
        else:
            local = resolve_checkpoint_dir(ref)
        # the mixin reads config.json, hands it to _from_pretrained, and keeps it for save_pretrained/push_to_hub
        return super().from_pretrained(str(local), **model_kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", config: dict | None = None,
                         **_: object) -> "LyricsModel":
        """`model_id` is a local checkpoint directory here (from_pretrained resolved the reference)."""
        net, vocab, config = load_checkpoint(model_id, device=map_location)
        model = cls(config, vocab.to_json())
        model.net = net
        return model.eval()

    # ---- generating -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, primetext: str = "", length: int = 500, temperature: float = 0.8, seed: int = 0,
                 top_k: int = 0, artist: str | None = None, against: str | None = None, guidance: float = 0.0,
                 device: str = "cpu", mixed_precision: str = "auto") -> str:
        """`length` characters continuing `primetext` (which starts the returned text); the same text as
        `lyricdist sample CHECKPOINT --primetext ... --length ... --temperature T --seed S` (with `--artist`,
        `--against`, `--guidance` for an artist-conditioned model). Runs on a copy set up as `sample` sets up its
        model (the RNN in the dtype whose fused kernel runs on `device`), so this model's weights stay as they are."""
        from .precision import use_for_inference
        from .sample import sample_from

        if temperature <= 0:
            raise LyricdistError(f"temperature must be positive, got {temperature}")
        net = copy.deepcopy(self.net).to(device).eval()
        use_for_inference(net, device, mixed_precision)
        return sample_from(net, self.vocab, self.checkpoint_config, primetext, length, [temperature], top_k, 1, seed,
                           artist=artist, against=against, guidance=guidance)[0].text

    # ---- saving -----------------------------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """A lyricdist checkpoint in `save_directory`: weights (fp32 safetensors), config.json, vocab.json, each
        file written atomically; other files there are left alone."""
        from safetensors.torch import save

        config = {**self.checkpoint_config, "format": CHECKPOINT_FORMAT, "model": asdict(self.net.cfg),
                  "vocab_size": len(self.vocab), "num_artists": self.net.num_artists, "artists": self.artists}
        atomic_write_bytes(save_directory / "model.safetensors",
                           save(portable_state(self.net), metadata={"format": "pt"}))
        atomic_write_json(save_directory / "vocab.json", self.vocab.to_json())
        atomic_write_json(save_directory / "config.json", config)

    def generate_model_card(self, *args, repo_id: str | None = None, **kwargs) -> ModelCard:
        """lyricdist's model card (as `lyricdist push` writes it), its sample generated by this model."""
        m = self.net
        artist = self.artists[0] if m.cfg.artist_embedding_dim and self.artists else None
        text = self.generate("", length=300, temperature=0.8, seed=0, artist=artist)
        config = {**self.checkpoint_config, "model": asdict(m.cfg), "vocab_size": len(self.vocab)}
        return ModelCard(hub_push.model_card(config, repo_id or "USER/REPO", text, **kwargs))

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, **kwargs) -> str:
        """huggingface_hub's push_to_hub, creating the repo private unless `private=False` (lyricdist's one default,
        as `lyricdist push --visibility`); the card names `repo_id` in its commands."""
        card = {"repo_id": repo_id, **(kwargs.pop("model_card_kwargs", None) or {})}
        return super().push_to_hub(repo_id, private=refs.DEFAULT_VISIBILITY == "private" if private is None else private,
                                   model_card_kwargs=card, **kwargs)

