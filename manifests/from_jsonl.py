"""Any corpus listed as JSON lines (one object per line) -> manifest, fields mapped by flags.

    python -m manifests.from_jsonl --input clips.jsonl --audio-field path --text-field text --task asr --out data/x.tsv
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, Iterator, List, Optional

from manifests.common import BuildResult
from manifests.table import make_parser, run


def read_jsonl(args: argparse.Namespace) -> Iterator[Dict[str, object]]:
    with open(args.input, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {args.input}, line {lineno}: not JSON ({e})") from None
            if not isinstance(record, dict):
                raise SystemExit(f"error: {args.input}, line {lineno}: expected a JSON object")
            yield record


def main(argv: Optional[List[str]] = None) -> BuildResult:
    return run(make_parser(__doc__, "manifests.from_jsonl"), read_jsonl, argv)


if __name__ == "__main__":
    main()
