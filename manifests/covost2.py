"""CoVoST 2 English -> German: ST manifests (and ASR on the same clips, for CoT combinations).

Reads the CoVoST 2 table ``<tsv-dir>/covost_v2.en_de.<split>.tsv`` (columns path, sentence,
translation, client_id; tab-separated, no quoting) and the Common Voice English clips
``<root>/clips/<path>``. Writes ``<out-dir>/<split>_st.tsv`` (target: the German translation) and,
with ``--tasks st asr``, ``<out-dir>/<split>_asr.tsv`` (target: the English sentence); both use
the clip name without extension as id, so ``manifests.combine --mode cot`` pairs them.

The clips are mp3. soundfile reads mp3 when its libsndfile is 1.1.0 or newer (the soundfile
>= 0.11 wheels bundle one); otherwise convert once and pass ``--clips-ext flac``::

    cd <root>/clips && for f in *.mp3; do ffmpeg -loglevel error -i "$f" -ac 1 -ar 16000 "${f%.mp3}.flac"; done

    python -m manifests.covost2 --root cv-corpus/en --splits train dev test --tasks st asr --out-dir data
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional

import soundfile

from manifests.common import (
    BuildResult, Candidate, SkipReport, add_common_args, build_rows, clean_text, script_parser, write_outputs,
)

TARGET_COLUMN = {"st": "translation", "asr": "sentence"}
"""Task -> the CoVoST column that is its target."""
REQUIRED_COLUMNS = ("path", "sentence", "translation")
CONVERT_COMMAND = ('cd {clips} && for f in *.mp3; do ffmpeg -loglevel error -i "$f" -ac 1 -ar 16000 '
                   '"${{f%.mp3}}.{ext}"; done')


def mp3_readable() -> bool:
    """Whether this soundfile's libsndfile decodes mp3 (libsndfile >= 1.1.0)."""
    return "MP3" in soundfile.available_formats()


def mp3_help(clips_dir: str) -> str:
    return (f"soundfile here cannot read mp3 (libsndfile {soundfile.__libsndfile_version__}; mp3 needs "
            f"libsndfile >= 1.1.0, bundled with the soundfile >= 0.11 wheels). Either upgrade soundfile, or "
            f"convert the clips once with ffmpeg and rerun with --clips-ext flac:\n    "
            + CONVERT_COMMAND.format(clips=clips_dir, ext="flac"))


def read_table(path: str) -> List[Dict[str, str]]:
    if not os.path.isfile(path):
        raise SystemExit(f"error: CoVoST 2 table {path} not found")
    with open(path, encoding="utf-8", newline="") as f:
        # The official loader reads these tables without quoting: sentences contain quote marks.
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise SystemExit(f"error: {path} lacks column(s) {', '.join(missing)}")
    return rows


def scan_split(table: str, clips_dir: str, clips_ext: str, tasks: List[str], report: SkipReport) -> List[Candidate]:
    """Candidates of every task for one split's table (a clip's tasks share its id and audio)."""
    out: List[Candidate] = []
    for lineno, record in enumerate(read_table(table), start=2):
        name = (record.get("path") or "").strip()
        if not name:
            report.add(f"{table}:{lineno}", "empty path")
            continue
        stem = os.path.splitext(name)[0]
        audio = os.path.join(clips_dir, f"{stem}.{clips_ext}")
        for task in tasks:
            text = clean_text(record.get(TARGET_COLUMN[task]) or "")
            if not text:
                report.add(audio, f"empty {TARGET_COLUMN[task]} ({os.path.basename(table)} line {lineno})")
                continue
            out.append(Candidate(stem, [audio], text, task))
    return out


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = script_parser(__doc__, "manifests.covost2")
    parser.add_argument("--root", required=True, help="the Common Voice English folder (holds clips/)")
    parser.add_argument("--tsv-dir", help="folder of covost_v2.en_de.<split>.tsv (default: --root)")
    parser.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TARGET_COLUMN), default=["st"],
                        help="st: German translation targets; asr: English transcript targets")
    parser.add_argument("--clips-ext", default="mp3", help="extension of the clips to read (mp3, or flac/wav "
                                                          "after converting them)")
    parser.add_argument("--out-dir", required=True, help="where <split>_<task>.tsv and skipped.tsv go")
    add_common_args(parser)
    args = parser.parse_args(argv)
    clips_dir = os.path.join(args.root, "clips")
    clips_ext = args.clips_ext.lstrip(".")
    if clips_ext.lower() == "mp3" and not mp3_readable():
        raise SystemExit("error: " + mp3_help(clips_dir))
    report = SkipReport()
    outputs = {}
    for split in args.splits:
        table = os.path.join(args.tsv_dir or args.root, f"covost_v2.en_de.{split}.tsv")
        candidates = scan_split(table, clips_dir, clips_ext, args.tasks, report)
        rows = build_rows(candidates, args.audio_root or args.root, args.seed, report, args.workers, args.quiet)
        for task in args.tasks:
            outputs[f"{split}_{task}"] = (os.path.join(args.out_dir, f"{split}_{task}.tsv"),
                                          [r for r in rows if r.task == task])
    return write_outputs(outputs, report, os.path.join(args.out_dir, "skipped.tsv"))


if __name__ == "__main__":
    main()
