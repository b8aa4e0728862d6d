"""What a scrape reports: each artist's result, the table printed at the end, the exit code. The driver fills it;
the dataset card is written from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXIT_ARTISTS_FAILED = 3


@dataclass
class ArtistResult:
    name: str
    status: str  # done | cached | failed
    artist: str = ""
    songs: int = 0
    chars: int = 0
    empty: int = 0
    duplicates: int = 0
    error: str = ""


@dataclass
class ScrapeReport:
    out: Path
    results: list[ArtistResult] = field(default_factory=list)
    dataset_written: bool = False

    @property
    def failed(self) -> list[ArtistResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        return EXIT_ARTISTS_FAILED if self.failed else 0

    def table(self):
        from rich.table import Table

        table = Table(title=f"lyricdist scrape -> {self.out}")
        for col, justify in [("artist", "left"), ("genius name", "left"), ("songs", "right"), ("chars", "right"),
                             ("empty", "right"), ("dupes", "right"), ("status", "left"), ("error", "left")]:
            table.add_column(col, justify=justify, overflow="fold")
        for r in self.results:
            status = {"failed": "[red]failed[/red]", "cached": "done (cached)"}.get(r.status, r.status)
            table.add_row(r.name, r.artist, str(r.songs), f"{r.chars:,}", str(r.empty), str(r.duplicates),
                          status, r.error)
        return table
