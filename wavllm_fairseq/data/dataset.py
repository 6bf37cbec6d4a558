"""The fairseq dataset behind the ``wavllm`` task: one manifest, tokenized up front.

Each item carries the template's text around the speech span (``prefix`` and
``suffix``), the bare instruction for the prompt-aware adapter, the target with the
end-of-turn token, and the waveform. The model assembles the LLM input itself,
because the number of speech frames is only known after the encoders.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fairseq.data import FairseqDataset

from .audio import AudioError, audio_info_frames, load_audio
from .manifest import ManifestError, ManifestRow, read_manifest, resolve_audio_path

logger = logging.getLogger(__name__)

SAMPLES_PER_LLM_POSITION = 1280
"""Audio samples per speech frame fed to the LLM (16 kHz / 12.5 Hz): the unit that makes text
tokens and audio comparable when batching by ``--max-tokens``."""


LOAD_ERROR = "load_error"
"""Batch key of the ManifestError for a row whose audio failed to load (see :func:`raise_load_error`)."""


def raise_load_error(batch: Dict) -> None:
    """Raises, in the main process, the error a DataLoader worker met loading a batch's audio."""
    if batch and LOAD_ERROR in batch:
        raise batch[LOAD_ERROR]


@dataclass
class EncodedExample:
    row: ManifestRow
    audio_paths: List[str]
    prefix: List[int]
    suffix: List[int]
    instruction: List[int]
    target: Optional[List[int]]
    audio_frames: int = 0
    """16 kHz samples of the row's audio as its files' headers give them (0 without speech): what
    length limits and batching use, whatever the manifest's ``n_frames`` says."""


HEADER_READERS = 8
"""Threads reading the audio files' headers when a manifest is loaded (file system latency, not CPU)."""

SHOWN_MISMATCHES = 5
"""Rows named one by one in the warning about ``n_frames`` values that disagree with the audio."""


def _header_frames(paths: List[str]) -> Tuple[int, Optional[str]]:
    """Total 16 kHz samples of the files from their headers, or the problem that makes them unusable."""
    try:
        return sum(audio_info_frames(p) for p in paths), None
    except AudioError as e:
        return 0, str(e)


def padded(seqs: List[List[int]], pad_id: int) -> torch.Tensor:
    """Token id lists as one right-padded B x T tensor (T at least 1)."""
    out = torch.full((len(seqs), max(1, max(len(s) for s in seqs))), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def prompt_input(prompts: Sequence, waves: Sequence[Optional[torch.Tensor]], pad_id: int) -> Dict[str, torch.Tensor]:
    """The model's inputs for a batch of prompts (anything with ``instruction``, ``prefix`` and
    ``suffix`` token lists) and their 16 kHz waves (None without speech): the ``net_input`` of the
    task's batches, which the inference API builds the same way."""
    lengths = [0 if w is None else w.numel() for w in waves]
    wave_batch = torch.zeros(len(waves), max(1, max(lengths)))
    for i, w in enumerate(waves):
        if w is not None:
            wave_batch[i, : lengths[i]] = w
    return {
        "src_tokens": padded([p.instruction for p in prompts], pad_id),
        "src_lengths": torch.tensor([len(p.instruction) for p in prompts]),
        "prefix_tokens": padded([p.prefix for p in prompts], pad_id),
        "prefix_lengths": torch.tensor([len(p.prefix) for p in prompts]),
        "suffix_tokens": padded([p.suffix for p in prompts], pad_id),
        "suffix_lengths": torch.tensor([len(p.suffix) for p in prompts]),
        "waves": wave_batch,
        "wave_lengths": torch.tensor(lengths),
    }


class WavLLMDataset(FairseqDataset):
    def __init__(
        self,
        manifest_path: str,
        tokenizer,
        template,
        pad_id: int,
        audio_root: Optional[str] = None,
        skip_bad_rows: bool = False,
        task_name: str = "",
        max_sample_size: Optional[int] = None,
    ):
        self.manifest_path = manifest_path
        self.pad_id = pad_id
        self.task_name = task_name
        self.skip_bad_rows = skip_bad_rows
        rows = read_manifest(manifest_path)
        paths = [[resolve_audio_path(a, audio_root, manifest_path) for a in r.audio] for r in rows]
        # Read every header once now, so a bad file fails at start-up and not hours into training.
        with ThreadPoolExecutor(HEADER_READERS) as pool:
            headers = list(pool.map(_header_frames, [p if r.with_speech else [] for r, p in zip(rows, paths)]))
        self.examples: List[EncodedExample] = []
        skipped, too_long, mismatched = [], [], []
        for row, audio_paths, (frames, problem) in zip(rows, paths, headers):
            if problem is not None:
                error = ManifestError(manifest_path, row.line, row.id, problem)
                if not skip_bad_rows:
                    raise error
                skipped.append(error)
                continue
            if max_sample_size is not None and frames > max_sample_size:
                too_long.append(ManifestError(manifest_path, row.line, row.id,
                                              f"{frames} audio samples, over --max-sample-size {max_sample_size}"))
                continue
            if row.with_speech and frames != row.n_frames:
                mismatched.append(f"line {row.line}, id {row.id!r}: n_frames {row.n_frames}, audio {frames}")
            prompt = template.encode_prompt(tokenizer, row.prompt, row.with_speech)
            target = None if row.tgt_text is None else template.encode_target(tokenizer, row.tgt_text)
            self.examples.append(
                EncodedExample(
                    row, audio_paths if row.with_speech else [], prompt.prefix, prompt.suffix,
                    template.encode_instruction(tokenizer, row.prompt), target, frames,
                )
            )
        for error in skipped:
            logger.warning("skipped: %s", error)
        if skipped:
            logger.warning("%s: skipped %d bad row(s) of %d", manifest_path, len(skipped), len(rows))
        for error in too_long:
            logger.warning("skipped (too long): %s", error)
        if too_long:
            logger.warning("%s: skipped %d row(s) of %d longer than --max-sample-size %d",
                           manifest_path, len(too_long), len(rows), max_sample_size)
        if mismatched:
            # Not an error: manifests in the wild (the official release's among them) carry
            # placeholder counts. The headers are read anyway, so theirs are used.
            logger.warning(
                "%s: n_frames disagrees with the audio files' headers in %d row(s) of %d; the headers' "
                "counts are used: %s%s", manifest_path, len(mismatched), len(rows),
                "; ".join(mismatched[:SHOWN_MISMATCHES]), " ..." if len(mismatched) > SHOWN_MISMATCHES else "")
        if not self.examples:
            raise ManifestError(manifest_path, 1, None, "no usable rows")
        self.has_target = all(e.target is not None for e in self.examples)
        self.task_names = sorted({e.row.task or task_name for e in self.examples})
        """Every task name its rows carry (the manifest's name where a row has no task)."""
        self._sizes = np.array([self._cost(e) for e in self.examples], dtype=np.int64)

    @staticmethod
    def _cost(e: EncodedExample) -> int:
        text = len(e.prefix) + len(e.suffix) + len(e.target or [])
        return e.audio_frames + text * SAMPLES_PER_LLM_POSITION

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Dict:
        e = self.examples[index]
        item = {"id": index, "example": e, "wave": None, "task": e.row.task or self.task_name}
        if e.audio_paths:
            try:
                item["wave"] = load_audio(e.audio_paths)
            except AudioError as err:
                # Returned, not raised: raised in a DataLoader worker it would reach the user
                # wrapped in a RuntimeError with two tracebacks (see raise_load_error).
                item["error"] = ManifestError(self.manifest_path, e.row.line, e.row.id, str(err))
        return item

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    def num_tokens(self, index: int) -> int:
        return int(self._sizes[index])

    def size(self, index: int) -> int:
        return int(self._sizes[index])

    def ordered_indices(self):
        # Shuffle, then a stable sort by size: batches of similar length, random among equals.
        order = np.random.permutation(len(self))
        return order[np.argsort(self._sizes[order], kind="mergesort")]

    def collater(self, samples: List[Dict]) -> Dict:
        errors = [s["error"] for s in samples if "error" in s]
        if errors and not self.skip_bad_rows:
            # net_input keeps fairseq-generate from passing over the batch before the task sees it.
            return {LOAD_ERROR: errors[0], "net_input": {}, "nsentences": 0, "ntokens": 0, "target": None}
        for error in errors:
            logger.warning("skipped: %s", error)
        samples = [s for s in samples if "error" not in s]
        if not samples:
            return {}
        examples = [s["example"] for s in samples]
        net_input = prompt_input(examples, [s["wave"] for s in samples], self.pad_id)
        # The model's cache of frozen-encoder output (if any) keys its entries by these files.
        net_input["audio_paths"] = [e.audio_paths for e in examples]
        batch = {
            "id": torch.tensor([s["id"] for s in samples]),
            "nsentences": len(samples),
            "net_input": net_input,
            "task_names": [s["task"] for s in samples],
            "target": None,
            "ntokens": 0,
        }
        if all(e.target is not None for e in examples):
            target = padded([e.target for e in examples], self.pad_id)
            eos = torch.tensor([e.target[-1] for e in examples])[:, None]
            # fairseq convention: the decoder input is the target shifted right behind one
            # placeholder (the end-of-turn id); the model replaces it by the prompt.
            net_input["prev_output_tokens"] = torch.cat([eos, target[:, :-1]], dim=1)
            batch["target"] = target
            batch["ntokens"] = sum(len(e.target) for e in examples)
        return batch
