"""`lyricdist scrape`: the options are `driver.scrape`'s parameters, each written once there (type, default, and
help from its docstring); range checks come from the types (PositiveInt, ...).

Exit codes: 0 every artist done; 1 bad input (e.g. GENIUS_ACCESS_TOKEN unset); 2 bad arguments;
3 (EXIT_ARTISTS_FAILED) one or more artists failed: the others are saved, a re-run retries only the failed ones.
"""

from __future__ import annotations

import inspect
import sys

from .driver import scrape
from .report import EXIT_ARTISTS_FAILED


def cli_parser():
    from ..options import function_parser

    description = inspect.getdoc(scrape).split("\n\n")[0].replace("\n", " ")
    parser = function_parser(scrape, words="artists")
    parser.description = (f"{description} Exit code {EXIT_ARTISTS_FAILED} when any artist failed (the rest are saved; "
                          f"re-run to retry).")
    return parser


def cli_run(parser, args) -> int:
    report = scrape(**args.as_dict())
    from rich.console import Console

    Console(soft_wrap=False, width=160).print(report.table())
    if report.failed:
        print(
            f"lyricdist scrape: {len(report.failed)} of {len(report.results)} artists failed; "
            f"{'the rest are saved in ' + str(args.out) if report.dataset_written else 'nothing was written'}; "
            "re-run the same command to retry only the failed ones",
            file=sys.stderr,
        )
    return report.exit_code
