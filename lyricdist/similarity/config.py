"""Typed settings of the siamese similarity model; every YAML key of configs/similarity-*.yaml maps to a field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

from jsonargparse.typing import (ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveFloat,
                                 PositiveInt)

from ..config import TrackingConfig
from ..errors import LyricdistError
from ..options import FractionBelowOne, check_fields, plain, plain_fields


@dataclass
class SimilarityDataConfig:
    """Where the training pairs come from.

    Args:
        sources: lyrics sources, any `lyricdist prepare` SOURCE spec of songs ('demo', a scraped dataset dir, ...)
        lastfm: a directory of Last.fm similarity JSON files (MSD companion layout); unset = pairs from the
            lyrics alone (same artist = similar, different artists = dissimilar)
        pairs_per_song: similar and as many dissimilar partners drawn per song (lyrics-only pairs)
        lastfm_negatives: add as many random unlisted Last.fm pairs (target 0) as listed ones, for 2-class accuracy
        test_fraction: fraction of songs (not pairs) held out for evaluation
        val_fraction: fraction of the remaining (training) songs set aside to choose the best checkpoint (lyrics
            pairs; 0 = keep the last one)
        seed: seed of the split and of the pair draw
    """

    sources: list[str] = field(default_factory=lambda: ["demo"])
    lastfm: Optional[str] = None
    pairs_per_song: PositiveInt = 4
    lastfm_negatives: bool = True
    test_fraction: OpenUnitInterval = 0.2
    val_fraction: FractionBelowOne = 0.0
    seed: int = 1234

    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)


@dataclass
class SimilarityModelConfig:
    """The shared encoder of the siamese model; similarity is exp(-L1) of the two texts' vectors either way.

    Args:
        kind: malstm -- the paper's word-level LSTM (Mueller & Thyagarajan 2016); ngram -- a bag of hashed word and
            character n-grams (lyricdist.similarity.ngram: beats TF-IDF on two lyricists, trains in minutes on CPU)
        embedding_dim: word vector size (300 in the paper, from word2vec); ngram: n-gram vector size
        hidden_size: LSTM units (50 in the paper); ngram: size of the text vector compared in L1
        max_len: words read per song (longer songs are cut)
        max_vocab: most frequent training words kept; the rest map to <unk>
        min_count: a word must occur this often in the training songs to get its own vector
        lowercase: fold case before tokenizing
        vectors: a local word2vec/GloVe text file to initialise word vectors (never downloaded)
        freeze_embeddings: keep the word vectors fixed during training
        buckets: ngram: hash buckets (rows of the n-gram table)
        char_min: ngram: shortest character n-gram
        char_max: ngram: longest character n-gram
        word_ngrams: ngram: words and word n-grams up to this length
    """

    kind: Literal["malstm", "ngram"] = "malstm"
    embedding_dim: PositiveInt = 300
    hidden_size: PositiveInt = 50
    max_len: PositiveInt = 300
    max_vocab: PositiveInt = 50000
    min_count: PositiveInt = 1
    lowercase: bool = True
    vectors: Optional[str] = None
    freeze_embeddings: bool = False
    buckets: PositiveInt = 131072
    char_min: PositiveInt = 2
    char_max: int = 5
    word_ngrams: NonNegativeInt = 2


    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)

    def validate(self) -> None:
        check_fields(self, "model.")
        if self.char_max < self.char_min:
            raise LyricdistError(f"model.char_max must be >= model.char_min, got {self.char_max} < {self.char_min}")


@dataclass
class SimilarityTrainConfig:
    """Optimisation and run settings.

    Args:
        batch_size: global pairs per step (split across processes)
        epochs: passes over the training pairs
        lr: learning rate (Adam)
        grad_clip: clip the global gradient norm to this (0 = off; the paper clips at 1.25)
        word_dropout: fraction of training words replaced by <unk> (against memorising single songs)
        random_windows: train on a random max_len-word window of each song rather than its opening
        loss: mse -- squared error of the similarity (the paper); bce -- log loss of the similarity as the
            probability that the two texts share an artist (a contrastive pairwise loss; ngram's default)
        segment_lines: ngram: a side shown as a segment has between this and twice this many lines
        segment_share: ngram: share of training sides shown as a segment rather than the whole song (so that
            4-line segments of a collaboration are attributed as well as songs)
        eval_every_epochs: epochs between held-out evaluations, checkpoints and resumable state (the generator's
            train.eval_every counts steps)
        log_every: steps between log lines
        seed: model initialisation and shuffling seed
        out_dir: where metrics.jsonl, test_set.json and checkpoints/last go
        mixed_precision: no, fp16 or bf16: the encoder's dtype, kept only where its fused kernel takes it (as in
            `train`: fp32 master weights, loss scaling for fp16)
        cpu: force CPU even when a GPU is present
    """

    batch_size: PositiveInt = 64
    epochs: PositiveInt = 20
    lr: PositiveFloat = 1e-3
    grad_clip: NonNegativeFloat = 1.25
    word_dropout: FractionBelowOne = 0.0
    random_windows: bool = True
    loss: Literal["mse", "bce"] = "mse"
    segment_lines: PositiveInt = 4
    segment_share: ClosedUnitInterval = 0.5
    eval_every_epochs: PositiveInt = 1
    log_every: PositiveInt = 20
    seed: int = 1337
    out_dir: str = "runs/similarity"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = False

    def __post_init__(self) -> None:
        plain_fields(self)  # numbers as builtins (lyricdist.options)


@dataclass
class SimilarityConfig:
    data: SimilarityDataConfig = field(default_factory=SimilarityDataConfig)
    model: SimilarityModelConfig = field(default_factory=SimilarityModelConfig)
    train: SimilarityTrainConfig = field(default_factory=SimilarityTrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> None:
        """Ranges come from the fields' types (as on the command line); what no type says is checked here."""
        if not self.data.sources:
            raise LyricdistError("data.sources is empty; give at least one lyrics source, e.g. --data.sources [demo]")
        check_fields(self)
        self.model.validate()

    def to_dict(self) -> dict:
        return plain(asdict(self))
