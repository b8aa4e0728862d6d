"""Genius lyrics into a Hugging Face dataset (`lyricdist scrape`), one module per concern:

- `artists`:  which artists (names, pinned Genius ids, YAML artist files)
- `cleaning`: the rules that strip Genius page junk from lyrics (pure functions)
- `client`:   lyricsgenius plus retries, the shared rate limit and one artist's fetch (runs in a Ray task)
- `limiter`:  the cluster-wide request-rate limiter (a Ray actor shared by every scrape job)
- `driver`:   `scrape()`: the Ray fan-out, per-artist resume records, the report
- `dataset`:  the dataset schema (also read by `lyricdist prepare`), writing it, its card, the Hub push
- `cli`:      the `lyricdist scrape` command, built from `scrape()`'s signature

Nothing is imported here, so that reading the schema (`prepare`) does not import Ray or lyricsgenius.
"""
