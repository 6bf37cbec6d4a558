"""LibriSpeech -> ASR manifests, one per split.

Layout read (the official one)::

    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt id> <TRANSCRIPT>" lines
    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac

Writes ``<out-dir>/<split>_asr.tsv``; transcripts are lower-cased (LibriSpeech is all capitals)
unless --keep-case. Transcript lines without audio, audio without a transcript line, empty
transcripts and unreadable files are skipped and listed in ``<out-dir>/skipped.tsv``.

    python -m manifests.librispeech --root LibriSpeech --splits train-clean-100 test-clean --out-dir data
"""
from __future__ import annotations

import os
from typing import List, Optional

from tqdm import tqdm

from manifests.common import (
    BuildResult, Candidate, SkipReport, add_common_args, build_rows, clean_text, script_parser, write_outputs,
)

TASK = "asr"


def _subdirs(path: str) -> List[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def scan_chapter(chapter_dir: str, speaker: str, chapter: str, keep_case: bool, report: SkipReport) -> List[Candidate]:
    """Candidates of one chapter folder; pairs transcript lines with flac files both ways."""
    flacs = {f[: -len(".flac")] for f in os.listdir(chapter_dir) if f.endswith(".flac")}
    trans = os.path.join(chapter_dir, f"{speaker}-{chapter}.trans.txt")
    if not os.path.isfile(trans):
        for utt in sorted(flacs):
            report.add(os.path.join(chapter_dir, utt + ".flac"), f"no transcript file {os.path.basename(trans)}")
        return []
    candidates, listed = [], set()
    with open(trans, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            listed.add(utt)
            audio = os.path.join(chapter_dir, utt + ".flac")
            text = clean_text(text)
            if not utt.startswith(f"{speaker}-{chapter}-"):
                report.add(f"{trans}:{lineno}", f"utterance id {utt!r} does not belong to chapter {speaker}-{chapter}")
            elif not text:
                report.add(audio, f"empty transcript ({os.path.basename(trans)} line {lineno})")
            else:
                candidates.append(Candidate(utt, [audio], text if keep_case else text.lower(), TASK))
    for utt in sorted(flacs - listed):
        report.add(os.path.join(chapter_dir, utt + ".flac"), "no transcript line")
    return candidates


def scan_split(root: str, split: str, keep_case: bool, report: SkipReport, quiet: bool) -> List[Candidate]:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise SystemExit(f"error: split folder {split_dir} not found")
    chapters = [(s, c) for s in _subdirs(split_dir) for c in _subdirs(os.path.join(split_dir, s))]
    candidates = []
    for speaker, chapter in tqdm(chapters, desc=f"scanning {split}", unit="chapter", disable=quiet):
        candidates += scan_chapter(os.path.join(split_dir, speaker, chapter), speaker, chapter, keep_case, report)
    return candidates


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = script_parser(__doc__, "manifests.librispeech")
    parser.add_argument("--root", required=True, help="the LibriSpeech folder (holds the split folders)")
    parser.add_argument("--splits", nargs="+", required=True, help="split folders, e.g. train-clean-100 test-clean")
    parser.add_argument("--out-dir", required=True, help="where <split>_asr.tsv and skipped.tsv go")
    parser.add_argument("--keep-case", action="store_true", help="keep the transcripts' capitals")
    add_common_args(parser)
    args = parser.parse_args(argv)
    report = SkipReport()
    outputs = {}
    for split in args.splits:
        candidates = scan_split(args.root, split, args.keep_case, report, args.quiet)
        rows = build_rows(candidates, args.audio_root or args.root, args.seed, report, args.workers, args.quiet)
        outputs[f"{split}_{TASK}"] = (os.path.join(args.out_dir, f"{split}_{TASK}.tsv"), rows)
    return write_outputs(outputs, report, os.path.join(args.out_dir, "skipped.tsv"))


if __name__ == "__main__":
    main()
