"""A decoded test set in, its task's score and one scored record per row out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from . import answers, instructions, metrics
from .tasks import METRICS


@dataclass(frozen=True)
class DecodedRow:
    id: str
    prompt: str
    reference: str
    hypothesis: str


def score_set(name: str, task: str, rows: List[DecodedRow]) -> Tuple[Dict, List[Dict]]:
    """(summary, per-row records) of one set. The summary has ``task``, ``metric``, ``score``, ``n``
    and the metric's details; each record has the row's id, prompt, reference, hypothesis, the
    normalised forms or extracted answers the score was computed from, and the row's score."""
    if not rows:
        raise ValueError(f"{name}: no rows to score")
    metric = METRICS[task]
    records = [{"id": r.id, "prompt": r.prompt, "reference": r.reference, "hypothesis": r.hypothesis} for r in rows]
    scorer = {"wer": _wer, "bleu": _bleu, "accuracy": _accuracy, "instruction_following": _instructions}[metric]
    summary = scorer(name, task, rows, records)
    return {"task": task, "metric": metric, **summary, "n": len(rows)}, records


def _wer(name, task, rows, records) -> Dict:
    refs = [metrics.normalize_english(r.reference) for r in rows]
    hyps = [metrics.normalize_english(r.hypothesis) for r in rows]
    for record, ref, hyp in zip(records, refs, hyps):
        errors = metrics.word_errors(ref, hyp)
        record.update(reference_normalised=ref, hypothesis_normalised=hyp, errors=errors.errors,
                      ref_words=errors.ref_words, score=errors.wer)
    normalised = metrics.corpus_wer(refs, hyps)
    raw = metrics.corpus_wer([r.reference for r in rows], [r.hypothesis for r in rows])
    return {"score": normalised.wer, "errors": normalised.errors, "ref_words": normalised.ref_words,
            "wer_raw": raw.wer, "normaliser": "whisper_normalizer.english.EnglishTextNormalizer"}


def _bleu(name, task, rows, records) -> Dict:
    for record, r in zip(records, rows):
        record["score"] = metrics.sentence_bleu(r.reference, r.hypothesis)
    bleu = metrics.corpus_bleu([r.reference for r in rows], [r.hypothesis for r in rows])
    return {"score": bleu.score, "signature": bleu.signature}


def _accuracy(name, task, rows, records) -> Dict:
    refs, found = [], []
    for record, r in zip(records, rows):
        labels = answers.label_set(task, r.prompt)
        ref = answers.reference_label(r.reference, labels, f"{name}, id {r.id!r}")
        extraction = answers.extract(r.hypothesis, labels)
        refs.append(ref)
        found.append(extraction)
        record.update(reference_label=ref, answer=extraction.answer, named=list(extraction.named),
                      status=extraction.status, score=float(extraction.answer == ref))
    result = answers.accuracy(refs, found)
    return {"score": result.accuracy, "no_label_percent": result.no_label, "ambiguous_percent": result.ambiguous}


def _instructions(name, task, rows, records) -> Dict:
    part_checks = []
    for record, r in zip(records, rows):
        checks = instructions.check_reply(r.prompt, r.reference, r.hypothesis, f"{name}, id {r.id!r}")
        part_checks.append(checks)
        record.update(followed=instructions.follows(checks), score=float(instructions.follows(checks)),
                      parts=[{"part": c.part, "passed": c.passed, "reason": c.reason, "reply": c.reply,
                              **({"answer": c.extraction.answer, "reference_label": c.reference_label}
                                 if c.extraction is not None else {})} for c in checks])
    n = len(rows)
    summary = {"score": 100.0 * sum(instructions.follows(c) for c in part_checks) / n}
    by_part: Dict[str, List[instructions.PartCheck]] = {}
    for checks in part_checks:
        for c in checks:
            by_part.setdefault(c.part, []).append(c)
    summary["parts_followed_percent"] = {p: 100.0 * sum(c.passed for c in cs) / len(cs) for p, cs in by_part.items()}
    sub = {}
    for part, cs in by_part.items():
        kind = instructions.PART_KINDS[part]
        if kind == "transcript":
            sub[f"{part}_wer"] = metrics.corpus_wer([metrics.normalize_english(c.reference) for c in cs],
                                                    [metrics.normalize_english(c.reply) for c in cs]).wer
        elif kind == "translation":
            sub[f"{part}_bleu"] = metrics.corpus_bleu([c.reference for c in cs], [c.reply for c in cs]).score
        else:
            sub[f"{part}_accuracy"] = answers.accuracy([c.reference_label for c in cs],
                                                       [c.extraction for c in cs]).accuracy
    summary["subtasks"] = sub
    return summary
