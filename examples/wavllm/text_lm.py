"""Stage 0 of the demo: a small LLaMA-architecture LM trained on the demo's kind of text.

WavLLM starts from a pretrained chat LLM. None small enough for a 2-core CPU exists offline, so
the demo makes one: a tiny LLaMA that reads sentences of the demo's grammar in the chat template
and does the text versions of the tasks (transcribing becomes copying, translating stays
translating, questions are answered from the sentence). The sentence sits exactly where the
speech frames will be, so stage 1 only has to teach the adapters to make speech look like that
text to it.

Like a pretrained LLM, it reads far more text than the speech corpus holds: the tasks' training
examples are planned afresh from the grammar (text only, never a test-split word pair). A
quarter of each batch asks it to copy scrambled word sequences, whose order the grammar cannot
predict: without them it learns the grammar's word statistics and never learns to copy (it
"transcribes" a different sentence of the same shape), which every task built on the words needs.
Speaker and speaking-rate answers do not follow from the words: the LM sees each of those prompts
once with every possible answer, so it learns the answer format (a pretrained chat LLM knows how
to answer yes or no) and a uniform prior, and cannot tie an answer to a sentence; the answers
themselves are learnt from the speech in stages 1 and 2.

The result is saved in Meta's format (``params.json`` + ``consolidated.00.pth``) and then
loaded, frozen, by the recipe like any user LLaMA checkpoint.

Usage::

    python examples/wavllm/text_lm.py --tokenizer spm.model --out LM_DIR [--steps 1000]
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from wavllm_fairseq.models.llama import LlamaConfig, LlamaModel, save_llama_meta
from wavllm_fairseq.text.templates import get_template
from wavllm_fairseq.text.tokenizer_files import load_tokenizer

import demo_corpus  # beside this file



@dataclass(frozen=True)
class TextLMSize:
    dim: int = 192
    n_layers: int = 3
    n_heads: int = 8
    """Eight heads of 24 rather than four of 48: with four, copying had not emerged after 1000 steps."""
    ffn_dim: int = 512


TEXT_EXAMPLES = {"asr": 6000, "st": 6000, "sqa": 6000, "ii": 6000, "cot": 6000, "sv": 2000, "rate": 1500}
"""Text-only training examples planned per task (sv and rate prompts carry no information in their words)."""
COPY_FRACTION = 0.25
"""Share of each batch that copies a scrambled word sequence."""
TEXT_SEED = 1000
"""Plans the text apart from the speech corpus (seed 0): other sentences, the same grammar and held-out pairs."""


def text_records(scale: float = 1.0, seed: int = TEXT_SEED) -> List[demo_corpus.Example]:
    """The tasks' training-split examples, planned as text only (``scale`` shrinks the counts for tests)."""
    return [e for task, n in TEXT_EXAMPLES.items()
            for e in demo_corpus.plan_task(task, "train", max(1, round(n * scale)), seed)]


def encode_example(tokenizer, template, prompt: str, spoken: str, answer: str) -> Tuple[List[int], int]:
    """(token ids, index of the first supervised token): the spoken words in place of the speech.
    The spoken words carry loss too: the LM learns the language, not only the answers."""
    encoded = template.encode_prompt(tokenizer, prompt, with_speech=True)
    ids = encoded.prefix + tokenizer.encode(spoken) + encoded.suffix + template.encode_target(tokenizer, answer)
    return ids, len(encoded.prefix)


def text_examples(records: List[demo_corpus.Example], tokenizer, template) -> List[Tuple[List[int], int]]:
    """One example per record, or per possible answer where only the sound tells the answer."""
    examples = [encode_example(tokenizer, template, r.prompt, " ".join(u.text for u in r.utterances), answer)
                for r in records for answer in demo_corpus.SPEECH_ONLY_ANSWERS.get(r.task, [r.target])]
    if not examples:
        raise ValueError("no text examples")
    return examples


def copy_example(rng: random.Random, words: List[str], tokenizer, template) -> Tuple[List[int], int]:
    """A transcription prompt over 4-9 words drawn at random: only copying predicts the answer."""
    text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
    return encode_example(tokenizer, template, rng.choice(demo_corpus.PROMPTS["asr"]), text, text)


def batch_tensors(batch: List[Tuple[List[int], int]], pad_id: int):
    width = max(len(ids) for ids, _ in batch)
    tokens = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    padding = torch.ones((len(batch), width), dtype=torch.bool)
    for i, (ids, first) in enumerate(batch):
        tokens[i, : len(ids)] = torch.tensor(ids)
        labels[i, first : len(ids) - 1] = torch.tensor(ids[first + 1 :])
        padding[i, : len(ids)] = False
    return tokens, labels, padding


def train_text_lm(
    tokenizer_path: str, out: str, template_name: str = "llama2", steps: int = 1000, batch_size: int = 32,
    lr: float = 1e-3, seed: int = 0, size: TextLMSize = TextLMSize(), data_scale: float = 1.0, quiet: bool = False,
) -> dict:
    """Trains the LM and saves it under ``out``; returns the final loss and the wall time."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = load_tokenizer(tokenizer_path)
    template = get_template(template_name)
    records = text_records(data_scale)
    examples = text_examples(records, tokenizer, template)
    words = sorted({w for r in records for u in r.utterances for w in u.text.split()})
    cfg = LlamaConfig(
        dim=size.dim, n_layers=size.n_layers, n_heads=size.n_heads, n_kv_heads=size.n_heads,
        vocab_size=tokenizer.vocab_size, ffn_dim=size.ffn_dim, max_seq_len=1024,
    )
    model = LlamaModel(cfg)
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    start, loss = time.time(), float("nan")
    model.train()
    bar = tqdm(range(steps), desc="stage 0: text LM", unit="step", disable=quiet)
    for _ in bar:
        batch = [copy_example(rng, words, tokenizer, template) if rng.random() < COPY_FRACTION
                 else rng.choice(examples) for _ in range(batch_size)]
        tokens, labels, pad = batch_tensors(batch, pad_id=0)
        positions = torch.arange(tokens.shape[1]).expand_as(tokens)
        hidden, _ = model(model.tok_embeddings(tokens), positions, pad)
        logits = model.output_logits(hidden)
        loss_t = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss = loss_t.item()
        bar.set_postfix(loss=f"{loss:.3f}")
    save_llama_meta(model, out)
    return {"loss": loss, "seconds": time.time() - start, "examples": len(examples)}


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="SentencePiece model (demo.py trains it on the corpus)")
    parser.add_argument("--out", required=True, help="folder for params.json and consolidated.00.pth")
    parser.add_argument("--template", default="llama2")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = train_text_lm(args.tokenizer, args.out, args.template, args.steps, args.batch_size, args.lr, args.seed,
                           quiet=args.quiet)
    print(f"text LM: loss {result['loss']:.3f} after {args.steps} steps in {result['seconds']:.0f} s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
