"""Plain UTF-8 text files: one continuous document each (char-rnn's input.txt)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ..errors import LyricdistError
from .registry import register_source

CHUNK_CHARS = 8 * 1024 * 1024


class TextFileSource:
    kind = "text"
    default_lowercase = False

    def __init__(self, path: str, chunk_chars: int = CHUNK_CHARS, **_: object):
        self.path = Path(path)
        self.name = f"text:{self.path}"
        self.artist = self.path.stem
        self.chunk_chars = chunk_chars
        if not self.path.is_file():
            raise LyricdistError(f"source {str(self.path)!r} does not exist or is not a file")
        if os.path.getsize(self.path) == 0:
            raise LyricdistError(f"source {str(self.path)!r} is empty; give a file with text in it")

    def chunks(self) -> Iterator[str]:
        offset = 0
        try:
            with open(self.path, "r", encoding="utf-8", errors="strict", newline=None) as f:
                while True:
                    chunk = f.read(self.chunk_chars)
                    if not chunk:
                        return
                    if "\x00" in chunk:
                        raise LyricdistError(
                            f"{self.path} looks like a binary file (it contains NUL bytes); give a UTF-8 text file"
                        )
                    offset += len(chunk)
                    yield chunk
        except UnicodeDecodeError as e:
            raise LyricdistError(
                f"{self.path} is not UTF-8 text (bad byte 0x{e.object[e.start]:02x} near character {offset + e.start}); "
                f"convert it, e.g. `iconv -f latin1 -t utf-8`"
            ) from None


def _is_text_file(spec: str) -> bool:
    return Path(spec).is_file()


register_source("text", _is_text_file, TextFileSource, fallback=True)
