"""lyricdist: distributed training of character-level LSTM lyric generators."""

__version__ = "0.1.0"
