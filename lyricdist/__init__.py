"""lyricdist: distributed training of character-level LSTM lyric generators."""

from .version import __version__  # noqa: F401  (lyricdist.__version__)

__all__ = ["LyricsModel"]


def __getattr__(name: str):
    """`from lyricdist import LyricsModel` without importing torch for every `import lyricdist` (the CLI's
    `scrape` does not need it)."""
    if name == "LyricsModel":
        from .pretrained import LyricsModel

        return LyricsModel
    raise AttributeError(f"module 'lyricdist' has no attribute {name!r}")
