"""Any corpus listed as CSV/TSV with a header -> manifest, columns mapped by flags.

    python -m manifests.from_csv --input clips.csv --audio-field file --text-field sentence --task asr --out data/x.tsv
    python -m manifests.from_csv --input clips.tsv --delimiter tab ...
"""
from __future__ import annotations

import argparse
import csv
from typing import Dict, Iterator, List, Optional

from manifests.common import BuildResult
from manifests.table import make_parser, run

DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";"}


def read_csv(args: argparse.Namespace) -> Iterator[Dict[str, object]]:
    with open(args.input, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets start with a byte-order mark
        yield from csv.DictReader(f, delimiter=DELIMITERS[args.delimiter])


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = make_parser(__doc__, "manifests.from_csv")
    parser.add_argument("--delimiter", choices=sorted(DELIMITERS), default="comma")
    return run(parser, read_csv, argv)


if __name__ == "__main__":
    main()
