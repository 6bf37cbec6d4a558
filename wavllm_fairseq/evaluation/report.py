"""``results.md`` (ours beside the paper's figures) and the bar chart of several checkpoints."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

from .metrics import mean_and_std
from .tasks import LOWER_IS_BETTER

METRIC_NAMES = {"wer": "WER % (Whisper-normalised)", "bleu": "BLEU", "accuracy": "accuracy %",
                "instruction_following": "instruction following %"}


@dataclass(frozen=True)
class PaperFigure:
    value: float
    source: str


PAPER = "WavLLM (Hu et al., 2024, arXiv 2404.00656)"
PAPER_FIGURES: Dict[str, PaperFigure] = {
    "test-clean_asr": PaperFigure(2.0, f"{PAPER}: LibriSpeech test-clean WER"),
    "test-other_asr": PaperFigure(4.8, f"{PAPER}: LibriSpeech test-other WER"),
}
"""The paper's figures by the set name ``manifests/`` gives the same test set. Only figures we
could check are listed; the paper's CoVoST 2, VoxCeleb, IEMOCAP and Gaokao figures are not yet."""
PAPER_NOTES = [
    f"{PAPER} reports a 92.5% instruction-following rate on its own II-task prompts, judged by GPT-4; "
    "the rate here is judged by deterministic checks (wavllm_fairseq/evaluation/instructions.py), "
    "so the two are not the same measure.",
]


def _reworded(sets: Dict[str, Dict], name: str) -> List[float]:
    """Scores of the set under each rewording of its instruction."""
    return [s["score"] for n, s in sets.items() if s.get("prompt_variant") is not None and n.startswith(name + ".prompt")]


def _cell(summary: Dict) -> str:
    return "-" if summary is None else f"{summary['score']:.1f}"


def headline(summary: Dict) -> str:
    """A set's score in one line, with what qualifies it (raw WER, BLEU signature, answer shares, parts)."""
    extra = []
    if summary["metric"] == "wer":
        extra.append(f"raw WER {summary['wer_raw']:.1f}")
    if summary["metric"] == "bleu":
        extra.append(f"sacreBLEU {summary['signature']}")
    if summary["metric"] == "accuracy":
        extra.append(f"no valid label {summary['no_label_percent']:.1f}%, "
                     f"two or more labels {summary['ambiguous_percent']:.1f}%")
    if summary["metric"] == "instruction_following":
        extra += [f"{p} followed {v:.1f}%" for p, v in summary["parts_followed_percent"].items()]
        extra += [f"{m.replace('_', ' ')} {v:.1f}" for m, v in summary["subtasks"].items()]
    return f"{METRIC_NAMES[summary['metric']]} {summary['score']:.1f} ({'; '.join(extra)})"


def results_markdown(checkpoints: Dict[str, Dict]) -> str:
    """One table of every set per checkpoint beside the paper's figure, each set followed by its
    scores under reworded instructions where decoded, then per-set details.

    ``checkpoints``: label -> {"path", "decoding", "sets": {set: summary}, "prompt_robustness": {...}}.
    """
    labels = list(checkpoints)
    base_sets: List[str] = []
    for result in checkpoints.values():
        base_sets += [s for s, summary in result["sets"].items()
                      if summary.get("prompt_variant") is None and s not in base_sets]
    lines = ["# Evaluation", ""]
    for label, result in checkpoints.items():
        decoding = ", ".join(f"{k} {v}" for k, v in result["decoding"].items() if v not in (None, "{}"))
        lines.append(f"- `{label}`: `{result['path']}` ({decoding})")
    lines += ["", "| set | task | metric | " + " | ".join(labels) + " | paper |",
              "|---|---|---|" + "---|" * (len(labels) + 1)]
    sources = []
    for name in base_sets:
        first = next(r["sets"][name] for r in checkpoints.values() if name in r["sets"])
        paper = "-"
        if name in PAPER_FIGURES:
            sources.append(PAPER_FIGURES[name].source)
            paper = f"{PAPER_FIGURES[name].value:.1f} [{len(sources)}]"
        cells = [_cell(checkpoints[label]["sets"].get(name)) for label in labels]
        lines.append(f"| {name} | {first['task']} | {METRIC_NAMES[first['metric']]} | " + " | ".join(cells)
                     + f" | {paper} |")
        reworded = {label: _reworded(checkpoints[label]["sets"], name) for label in labels}
        if any(reworded.values()):
            k = max(len(v) for v in reworded.values())
            cells = ["%.1f ± %.1f" % mean_and_std(v) if v else "-" for v in reworded.values()]
            lines.append(f"| {name}, {k} held-out rewordings (mean ± sd) | {first['task']} | "
                         f"{METRIC_NAMES[first['metric']]} | " + " | ".join(cells) + " | - |")
    lines += ["", "## Details", ""]
    for label, result in checkpoints.items():
        for name, summary in result["sets"].items():
            lines.append(f"- `{label}` {name} ({summary['n']} rows): {headline(summary)}")
    if sources:
        lines += ["", "Paper figures:"] + [f"[{i}] {s}" for i, s in enumerate(sources, 1)]
    lines += [""] + [f"Note: {n}" for n in PAPER_NOTES if any(
        s["metric"] == "instruction_following" for r in checkpoints.values() for s in r["sets"].values())]
    return "\n".join(lines).rstrip() + "\n"


def bar_chart(checkpoints: Dict[str, Dict], path: str) -> None:
    """One panel per base set, one bar per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(checkpoints)
    sets = []
    for result in checkpoints.values():
        sets += [s for s, summary in result["sets"].items() if summary.get("prompt_variant") is None and s not in sets]
    cols = min(4, len(sets))
    rows = (len(sets) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, sets):
        scores = [checkpoints[label]["sets"].get(name, {}).get("score", 0.0) for label in labels]
        metric = next(r["sets"][name]["metric"] for r in checkpoints.values() if name in r["sets"])
        ax.bar(range(len(labels)), scores, color=[f"C{i}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{name}\n{METRIC_NAMES[metric]} ({arrow})", fontsize=8)
        for i, v in enumerate(scores):
            ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
