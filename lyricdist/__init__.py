"""lyricdist: distributed training of character-level LSTM lyric generators."""

__version__ = "0.1.0"

__all__ = ["LyricsModel"]


def __getattr__(name: str):
    """`from lyricdist import LyricsModel` without importing torch for every `import lyricdist` (the CLI's
    `scrape` does not need it)."""
    if name == "LyricsModel":
        from .pretrained import LyricsModel

        return LyricsModel
    raise AttributeError(f"module 'lyricdist' has no attribute {name!r}")
