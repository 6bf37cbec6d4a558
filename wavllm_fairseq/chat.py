"""Ask a trained model about clips from a terminal, in the spirit of ``fairseq-interactive``.

    python -m wavllm_fairseq.chat --path checkpoint.pt --audio clip.wav

At a terminal, each line typed is a question about ``--audio`` (``:audio PATH`` switches the
clip, ``:text`` drops it for text-only questions, an empty line or end of input quits); the
answer streams in at beam 1. When standard input is not a terminal, every line is
``audio<TAB>prompt`` (an empty audio field asks about ``--audio``, or about nothing without it;
a line without a tab is a prompt about ``--audio``; blank lines are skipped). Lines are decoded
in batches as they arrive, and standard output gets one answer per input line, in order, with
newlines inside an answer written as ``\\n`` (backslashes as ``\\\\``). A line that cannot be
used is named on standard error, its output line is left empty, the other lines are still
answered, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
from typing import Iterable, List, Optional, Tuple

from .data.audio import AudioError
from .errors import install_excepthook
from .inference import Decoding, Query, WavLLM

LINES_PER_ROUND = 4
"""Scripted input is decoded this many batches at a time: batches of similar length, while
answers keep coming and memory stays bounded on long inputs."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wavllm_fairseq.chat", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    defaults = Decoding()
    parser.add_argument("--audio", help="the clip questions are about (a file libsndfile reads)")
    parser.add_argument("--beam", type=int, default=defaults.beam, help="beam size (fairseq-generate's --beam)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                        help="longest answer in tokens (fairseq-generate's --max-len-b)")
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Checkpoint options, shared with ``wavllm_fairseq.serve``."""
    parser.add_argument("--path", required=True, help="checkpoint of ours (fairseq-train's, or an imported one)")
    parser.add_argument("--tokenizer", help="tokenizer file; default: the one recorded in the checkpoint")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ...; default: cuda when available")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=16, help="most questions decoded together")


def load_model(args: argparse.Namespace) -> WavLLM:
    return WavLLM.from_checkpoint(args.path, tokenizer=args.tokenizer, device=args.device, dtype=args.dtype,
                                  batch_size=args.batch_size)


def parse_line(line: str, default_audio: Optional[str]) -> Tuple[Optional[str], str]:
    """(audio path or None, prompt) of a scripted input line."""
    if "\t" not in line:
        return default_audio, line
    audio, prompt = line.split("\t", 1)
    return audio or default_audio, prompt


def answer_lines(model: WavLLM, lines: Iterable[str], default_audio: Optional[str], decoding: Decoding) -> int:
    """Answers scripted input lines (see the module's docstring) as they arrive, a few batches'
    worth at a time; returns the exit status."""
    failed = False
    pending: List[Optional[Query]] = []

    def flush() -> None:
        answers = iter(model.answer([q for q in pending if q is not None], decoding))
        for query in pending:
            text = "" if query is None else next(answers).text
            print(text.replace("\\", "\\\\").replace("\n", "\\n"), flush=True)
        pending.clear()

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        audio, prompt = parse_line(line, default_audio)
        try:
            pending.append(model.query(audio, prompt))
        except AudioError as e:
            print(f"wavllm_fairseq: error: standard input, line {number}: {e}", file=sys.stderr)
            pending.append(None)
            failed = True
        if len(pending) >= LINES_PER_ROUND * model.batch_size:
            flush()
    flush()
    return 1 if failed else 0


def converse(model: WavLLM, audio: Optional[str], decoding: Decoding) -> int:
    """The interactive loop at a terminal."""
    print(f"Asking about {audio or 'no audio'}. ':audio PATH' switches the clip, ':text' drops it, "
          "an empty line quits.", file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        if line.startswith(":audio "):
            audio = line[len(":audio "):].strip()
            continue
        if line == ":text":
            audio = None
            continue
        try:
            query = model.query(audio, line)
        except AudioError as e:
            print(f"wavllm_fairseq: error: {e}", file=sys.stderr)
            continue
        printed = ""

        def show(_row: int, tokens: List[int]) -> None:
            nonlocal printed
            text = model.text(tokens)
            if text.startswith(printed) and not text.endswith("\ufffd"):
                print(text[len(printed):], end="", flush=True)
                printed = text

        answer = model.answer([query], decoding, on_tokens=show)[0]
        print(answer.text[len(printed):] if answer.text.startswith(printed) else "\n" + answer.text, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    decoding = Decoding(beam=args.beam, max_new_tokens=args.max_new_tokens)
    model = load_model(args)
    if sys.stdin.isatty():
        return converse(model, args.audio, decoding)
    return answer_lines(model, (line.rstrip("\r\n") for line in sys.stdin), args.audio, decoding)


if __name__ == "__main__":
    install_excepthook()
    sys.exit(main())
