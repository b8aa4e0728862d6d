"""The bundled demo corpus: two invented artists, written for this project, shippable with the package."""

from __future__ import annotations

from importlib import resources
from typing import Iterator

from ..errors import LyricdistError
from .registry import Song, register_source


def parse_songbook(text: str, origin: str = "<songbook>") -> list[Song]:
    """Parse the demo format: `# artist: NAME` header, then `## TITLE` lines each starting a song."""
    artist = ""
    songs: list[Song] = []
    title: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if title is not None:
            body = "\n".join(lines).strip("\n")
            if body:
                songs.append(Song(text=body + "\n", artist=artist, title=title))

    for line in text.splitlines():
        if line.startswith("## "):
            flush()
            title, lines = line[3:].strip(), []
        elif title is None:
            if line.startswith("# artist:"):
                artist = line.split(":", 1)[1].strip()
        else:
            lines.append(line.rstrip())
    flush()
    if not artist:
        raise LyricdistError(f"{origin} has no '# artist: NAME' line")
    return songs


class DemoSource:
    """`demo` (both artists) or `demo:juniper_vale` (one file of lyricdist/demo_corpus)."""

    kind = "songs"
    default_lowercase = True

    def __init__(self, spec: str = "", **_: object):
        names = [] if spec in ("", "demo") else [s for s in spec.split(",") if s]
        root = resources.files("lyricdist") / "demo_corpus"
        files = sorted(p for p in root.iterdir() if p.name.endswith(".txt"))
        if names:
            wanted = {n.removesuffix(".txt") for n in names}
            files = [p for p in files if p.name.removesuffix(".txt") in wanted]
            if len(files) != len(wanted):
                have = ", ".join(p.name.removesuffix(".txt") for p in root.iterdir() if p.name.endswith(".txt"))
                raise LyricdistError(f"demo artists {sorted(wanted)} not all found; available: {have}")
        self.files = files
        self.name = "demo" + (":" + ",".join(names) if names else "")

    def songs(self) -> Iterator[Song]:
        for path in self.files:
            yield from parse_songbook(path.read_text(encoding="utf-8"), origin=str(path))


register_source("demo", lambda spec: spec == "demo", DemoSource)
