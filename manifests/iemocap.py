"""IEMOCAP -> emotion-recognition manifests (four classes), session 5 held out as test.

Reads the release layout::

    <root>/Session{1..5}/sentences/wav/<dialog>/<utt>.wav
    <root>/Session{N}/dialog/EmoEvaluation/<dialog>.txt   "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[...]"
    <root>/Session{N}/dialog/transcriptions/<dialog>.txt  "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."

Targets are neutral / happy / angry / sad, with excited (exc) merged into happy (the usual
four-class setup); utterances with any other label (frustrated, surprised, xxx, ...) are skipped
and counted per label in the report. ``--tasks er asr`` also writes transcripts of the same
utterances (ids shared, so ``manifests.combine`` can chain the two). Writes
``<out-dir>/{train,test}_<task>.tsv``.

    python -m manifests.iemocap --root IEMOCAP_full_release --out-dir data
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from tqdm import tqdm

from manifests.common import (
    BuildResult, Candidate, SkipReport, add_common_args, build_rows, clean_text, script_parser, write_outputs,
)

EMOTIONS = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
"""IEMOCAP label -> target word; labels not listed are skipped."""
SESSIONS = (1, 2, 3, 4, 5)
LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(\S+)\t(\S+)\t")
TRANSCRIPT_LINE = re.compile(r"^(\S+) \[[\d.]+-[\d.]+\]:\s*(.*)$")


def _read_lines(folder: str, pattern: re.Pattern) -> Dict[str, str]:
    """utt id -> second group, over every ``*.txt`` directly in ``folder``."""
    out: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".txt") and not name.startswith("."):
            with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = pattern.match(line.rstrip("\n"))
                    if m:
                        out[m.group(1)] = m.group(2)
    return out


def scan_session(root: str, session: int, tasks: List[str], report: SkipReport) -> List[Candidate]:
    base = os.path.join(root, f"Session{session}")
    wav_dir = os.path.join(base, "sentences", "wav")
    if not os.path.isdir(wav_dir):
        raise SystemExit(f"error: {wav_dir} not found")
    labels = _read_lines(os.path.join(base, "dialog", "EmoEvaluation"), LABEL_LINE)
    transcripts = _read_lines(os.path.join(base, "dialog", "transcriptions"), TRANSCRIPT_LINE) if "asr" in tasks else {}
    wavs: Dict[str, str] = {}
    for dialog in sorted(os.listdir(wav_dir)):
        folder = os.path.join(wav_dir, dialog)
        if os.path.isdir(folder):
            # dot-files are macOS metadata shipped in some copies, not utterances
            wavs.update({f[:-4]: os.path.join(folder, f) for f in sorted(os.listdir(folder))
                         if f.endswith(".wav") and not f.startswith(".")})
    candidates = []
    if "er" in tasks:
        for utt, label in labels.items():
            # The wav folder is named after the dialog: the utterance id minus its last part.
            audio = wavs.get(utt, os.path.join(wav_dir, utt.rsplit("_", 1)[0], utt + ".wav"))
            if label not in EMOTIONS:
                report.add(audio, f"label {label!r} is not one of {', '.join(EMOTIONS)}")
            else:
                candidates.append(Candidate(utt, [audio], EMOTIONS[label], "er"))
        for utt in sorted(set(wavs) - set(labels)):
            report.add(wavs[utt], "no emotion label")
    if "asr" in tasks:
        for utt, audio in wavs.items():
            text = clean_text(transcripts.get(utt, ""))
            if text:
                candidates.append(Candidate(utt, [audio], text, "asr"))
            else:
                report.add(audio, "no transcript" if utt not in transcripts else "empty transcript")
    return candidates


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = script_parser(__doc__, "manifests.iemocap")
    parser.add_argument("--root", required=True, help="the IEMOCAP release folder (holds Session1..Session5)")
    parser.add_argument("--out-dir", required=True, help="where {train,test}_<task>.tsv and skipped.tsv go")
    parser.add_argument("--test-sessions", type=int, nargs="+", default=[5], choices=SESSIONS,
                        help="sessions held out as test; the others are train")
    parser.add_argument("--tasks", nargs="+", choices=("er", "asr"), default=["er"],
                        help="er: emotion targets; asr: transcript targets of the same utterances")
    add_common_args(parser)
    args = parser.parse_args(argv)
    report = SkipReport()
    by_split: Dict[str, List[Candidate]] = {"train": [], "test": []}
    for session in tqdm(SESSIONS, desc="scanning sessions", unit="session", disable=args.quiet):
        split = "test" if session in args.test_sessions else "train"
        by_split[split] += scan_session(args.root, session, args.tasks, report)
    outputs = {}
    for split, candidates in by_split.items():
        rows = build_rows(candidates, args.audio_root or args.root, args.seed, report, args.workers, args.quiet)
        for task in args.tasks:
            name = f"{split}_{task}"
            outputs[name] = (os.path.join(args.out_dir, name + ".tsv"), [r for r in rows if r.task == task])
    return write_outputs(outputs, report, os.path.join(args.out_dir, "skipped.tsv"))


if __name__ == "__main__":
    main()
