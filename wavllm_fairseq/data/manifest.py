"""TSV manifests in the official WavLLM layout (SPEC section 5).

One header line, then one example per line. Columns are found by name, in any
order; extra columns are kept but ignored::

    id  audio  n_frames  prompt  tgt_text  with_speech

``audio`` holds one path, or several joined by ``|`` for multi-audio examples
(they are concatenated in time); paths are absolute or relative to an audio
root. ``n_frames`` counts 16 kHz samples of all the example's audio together.
``tgt_text`` may be absent for inference-only sets. An optional ``task`` column (ours; the
official reader ignores extra columns) names each row's task for per-task statistics.

>>> import io, tempfile, os
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "test.tsv")
>>> write_manifest(p, [ManifestRow("u1", ["a.wav"], 16000, "Transcribe.", "hi", True)])
1
>>> [r.id for r in read_manifest(p)]
['u1']
"""
from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional

from ..user_error import UserError

REQUIRED_COLUMNS = ("id", "audio", "n_frames", "prompt", "with_speech")
COLUMNS = ("id", "audio", "n_frames", "prompt", "tgt_text", "with_speech")
AUDIO_SEPARATOR = "|"
SAMPLE_RATE = 16000

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class ManifestError(UserError):
    """A manifest problem, located by file, line and (where known) example id."""

    def __init__(self, path: str, line: int, example_id: Optional[str], reason: str):
        self.path, self.line, self.example_id, self.reason = path, line, example_id, reason
        where = f"{path}, line {line}"
        if example_id is not None:
            where += f", id {example_id!r}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        # Rebuilt from its parts when it crosses from a DataLoader worker to the main process.
        return ManifestError, (self.path, self.line, self.example_id, self.reason)


@dataclass
class ManifestRow:
    id: str
    audio: List[str]
    n_frames: int
    prompt: str
    tgt_text: Optional[str]
    with_speech: bool
    line: int = 0
    """Line number in the manifest (1-based, header is line 1); 0 for rows built in code."""
    task: Optional[str] = None
    """Task name (asr, st, sv, ...) from the optional ``task`` column."""


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"with_speech must be True or False, got {value!r}")


def _text_lines(path: str) -> List[str]:
    """The file's lines. A byte-order mark (spreadsheet programs write one) is dropped; bytes
    that are not UTF-8 are kept as surrogates (``surrogateescape``) so that the row holding them
    can be reported by line, id and column (:func:`_check_utf8`). CRLF line ends are handled by
    the caller stripping each line's ``\\r``."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    lines = data.decode("utf-8", errors="surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_utf8(path: str, line: int, example_id: Optional[str], names: List[str], fields: List[str]) -> None:
    for name, value in zip(names, fields):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            byte = ord(value[e.start]) - 0xDC00  # surrogateescape maps byte b to U+DC00 + b
            raise ManifestError(
                path, line, None if example_id is None else example_id.encode("utf-8", "replace").decode(),
                f"column {name} is not UTF-8 text (byte 0x{byte:02x}); save the manifest as UTF-8",
            ) from None


def read_manifest(path: str) -> List[ManifestRow]:
    """Reads and validates every row; raises ManifestError at the first bad one."""
    rows: List[ManifestRow] = []
    lines = _text_lines(path)
    if not lines:
        raise ManifestError(path, 1, None, "empty file: a header line is required")
    header = lines[0].rstrip("\r").split("\t")
    _check_utf8(path, 1, None, ["header"] * len(header), header)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            path, 1, None,
            f"missing required column(s) {', '.join(missing)}; header has {', '.join(header)}",
        )
    index = {name: i for i, name in enumerate(header)}
    seen = set()
    for lineno, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        fields = raw.split("\t")
        example_id = fields[index["id"]] if len(fields) > index["id"] else None
        if len(fields) != len(header):
            raise ManifestError(
                path, lineno, example_id,
                f"expected {len(header)} tab-separated fields, found {len(fields)}",
            )
        _check_utf8(path, lineno, example_id, header, fields)
        if not example_id:
            raise ManifestError(path, lineno, None, "empty id")
        if example_id in seen:
            raise ManifestError(path, lineno, example_id, "duplicate id")
        seen.add(example_id)
        try:
            with_speech = parse_bool(fields[index["with_speech"]])
        except ValueError as e:
            raise ManifestError(path, lineno, example_id, str(e)) from None
        try:
            n_frames = int(fields[index["n_frames"]])
        except ValueError:
            raise ManifestError(
                path, lineno, example_id,
                f"n_frames must be an integer, got {fields[index['n_frames']]!r}",
            ) from None
        prompt = fields[index["prompt"]]
        # A spoken query (the release's SQQA.tsv) has its question in the speech and no prompt.
        if not prompt.strip() and not with_speech:
            raise ManifestError(path, lineno, example_id, "empty prompt in a row without speech")
        audio = [a for a in fields[index["audio"]].split(AUDIO_SEPARATOR) if a]
        if with_speech and not audio:
            raise ManifestError(path, lineno, example_id, "with_speech is True but audio is empty")
        if with_speech and n_frames <= 0:
            raise ManifestError(path, lineno, example_id, f"n_frames must be positive, got {n_frames}")
        tgt = fields[index["tgt_text"]] if "tgt_text" in index else None
        task = fields[index["task"]] or None if "task" in index else None
        rows.append(ManifestRow(example_id, audio, n_frames, prompt, tgt, with_speech, lineno, task))
    return rows


def write_manifest(path: str, rows: Iterable[ManifestRow]) -> int:
    """Writes rows with the standard header; returns the number written.

    Tabs and newlines inside text fields would break the format, so they are
    rejected rather than silently rewritten.
    """
    rows = list(rows)
    columns = COLUMNS + (("task",) if any(r.task for r in rows) else ())
    n = 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(columns) + "\n")
        for r in rows:
            fields = [
                r.id,
                AUDIO_SEPARATOR.join(r.audio),
                str(int(r.n_frames)),
                r.prompt,
                "" if r.tgt_text is None else r.tgt_text,
                "True" if r.with_speech else "False",
            ] + (["" if r.task is None else r.task] if len(columns) > len(COLUMNS) else [])
            for name, value in zip(columns, fields):
                if "\t" in value or "\n" in value or "\r" in value:
                    raise ValueError(f"{path}: id {r.id!r}: field {name} contains a tab or newline")
            f.write("\t".join(fields) + "\n")
            n += 1
    return n


def resolve_audio_path(audio: str, audio_root: Optional[str], manifest_path: str) -> str:
    """Absolute paths are kept; relative ones join the audio root, else the manifest's folder."""
    if os.path.isabs(audio):
        return audio
    root = audio_root if audio_root else os.path.dirname(os.path.abspath(manifest_path))
    return os.path.join(root, audio)

