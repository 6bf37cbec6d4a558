"""Our LLM stack against the same model assembled from transformers + peft, like for like.

Ours: ``WavLLMModel`` (text-only rows, so the speech encoders are skipped) trained the way
fairseq trains it and decoded with fairseq's ``SequenceGenerator``. Theirs: ``LlamaForCausalLM``
with peft's LoRA on q/k/v/o, identical weights (the base weights go through ``save_pretrained``
and our Hugging Face loader; the LoRA matrices, B made non-zero, are copied across, rows
permuted where the loader un-permuted wq / wk).

Like for like, as a user of each stack would run it:
- training: LoRA unmerged on both sides; logits only where the loss needs them (ours computes
  the target positions only, transformers gets ``logits_to_keep``);
- generation: LoRA merged on both sides (ours by ``prepare_for_inference_`` as fairseq-generate
  runs it, peft's by ``merge_and_unload()``), KV cache on both. Two transformers calls: the
  *same work* as fairseq's generator (a fixed number of new tokens, then the end of turn, which
  costs fairseq a forward pass of its own: ``min_new_tokens`` and :func:`end_of_turn_at`), and
  ``generate(num_beams=..., use_cache=True)`` as users call it, with one token more so that both
  sides run the same number of forward passes.
Before any timing, in float32, the outputs are checked equal: training logits and loss, the
tokens of every row of the same-work calls and the first n tokens of the plain call at beam 1
(at beam 4 its last step ranks by the best token, not the end of turn, so its answers differ by
design), and greedy decoding with and without our KV cache. A mismatch ends the run with an
error. Timing then runs in --dtype.

Times are medians of --repeats samples after one warm-up call (a sample repeats a short call until
it lasts ~0.2 s), the two sides alternating so that a machine whose speed drifts slows both alike,
on --threads CPU threads (1 by default) or on a GPU (--device cuda, where the peak GPU memory of a
training step is reported too).

Needs transformers and peft: ``pip install -e '.[bench]'`` (scripts/test.sh's .venv-test has them).

    python benchmarks/stack_speed.py [--sizes tiny small] [--quick] [--profile 15]
    python benchmarks/stack_speed.py --device cuda --dtype bfloat16 --sizes small_gpu 1b_gpu
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

from wavllm_fairseq.models.llama import LLAMA_PRESETS
from wavllm_fairseq.models.wavllm import ARCHITECTURES, WavLLMConfig, WavLLMModel

LORA_TARGETS = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj"}
"""Our attention projections and their transformers names."""
LOGIT_TOLERANCE = 1e-4
"""Largest |logit difference| ours vs transformers accepted in float32 (measured: ~1e-6)."""
EOS = 2


class BenchmarkError(Exception):
    """Outputs of the two stacks differ, or a dependency is missing: the run stops."""


@dataclass
class Size:
    """One benchmarked model size and its workload."""

    llm_preset: str
    """Our LLaMA preset giving the dimensions (random weights)."""
    lora_rank: int
    """LoRA rank on q, k, v, o (alpha = 2 * rank)."""
    batch: int
    """Rows per training step and per generation call."""
    prompt_len: int
    """Prompt tokens per row."""
    target_len: int
    """Target tokens per row in training; new tokens per row in generation."""


SIZES = {
    "tiny": Size("tiny_test", 8, batch=8, prompt_len=32, target_len=32),  # wavllm_tiny's LLM
    # SmolLM2-135M dims; a light workload: recomputing without the KV cache is quadratic on one core.
    "small": Size("smollm2_135m", 32, batch=2, prompt_len=32, target_len=16),
    # The same with a speech-length prompt: a 15-s clip at 12.5 positions a second and an instruction.
    "small_speech": Size("smollm2_135m", 32, batch=2, prompt_len=200, target_len=16),
    # GPU workloads: speech-LLM-like prompts (a few hundred positions) and batches.
    "small_gpu": Size("smollm2_135m", 32, batch=16, prompt_len=256, target_len=64),
    "1b_gpu": Size("llama3.2_1b", 16, batch=8, prompt_len=256, target_len=64),
}


class BenchDictionary(Dictionary):
    """Ids 0..V-1 plus a pad id V, like the task's tokenizer dictionary; eos is id 2."""

    def __init__(self, vocab_size: int):
        super().__init__(bos="<s>", pad="<pad>", eos="</s>", unk="<unk>")
        self.symbols, self.count, self.indices = [], [], {}
        for i in range(vocab_size + 1):
            self.add_symbol(f"t{i}")
        self.unk_index, self.bos_index, self.eos_index, self.pad_index = 0, 1, EOS, vocab_size
        self.nspecial = 3
        self.vocab_size = vocab_size


def require_peft() -> None:
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise BenchmarkError(f"needs transformers and peft ({e.name} is missing): pip install -e '.[bench]'") from e


def hf_config(preset: str):
    from transformers import LlamaConfig as HFLlamaConfig

    c = LLAMA_PRESETS[preset]
    return HFLlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, max_position_embeddings=c.max_seq_len, tie_word_embeddings=c.tie_embeddings,
        bos_token_id=1, eos_token_id=EOS, pad_token_id=None,
    )


def build_pair(size: Size, folder: str):
    """(our WavLLMModel, transformers model with peft's LoRA, their trainable LoRA parameters),
    with identical weights."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(hf_config(size.llm_preset)).float()
    with torch.no_grad():
        # The end of turn's logit is 0 while others are random: answers run their full length in
        # both stacks (random weights otherwise end some rows early, in transformers' plain call).
        hf.get_output_embeddings().weight[EOS] = 0
    hf.save_pretrained(folder)
    vocab = hf.config.vocab_size
    arch = dict(ARCHITECTURES["wavllm_tiny"], llm_path=folder, lora_rank=size.lora_rank,
                lora_alpha=2.0 * size.lora_rank, lora_dropout=0.0)
    ours = WavLLMModel.build_model(WavLLMConfig(**arch), SimpleNamespace(target_dictionary=BenchDictionary(vocab)))
    for layer in ours.decoder.llm.lora_layers():
        nn.init.normal_(layer.lora_B, std=0.02)

    hf = get_peft_model(hf, PeftLoraConfig(r=size.lora_rank, lora_alpha=2.0 * size.lora_rank, lora_dropout=0.0,
                                           target_modules=list(LORA_TARGETS.values())))
    for p in hf.parameters():
        p.requires_grad = False
    lora_params = []
    for ours_block, hf_block in zip(ours.decoder.llm.layers, hf.get_base_model().model.layers):
        for ours_name, hf_name in LORA_TARGETS.items():
            mine, theirs = getattr(ours_block.attention, ours_name), getattr(hf_block.self_attn, hf_name)
            a, b, base = theirs.lora_A["default"].weight, theirs.lora_B["default"].weight, theirs.base_layer
            # Which of our rows each of their rows is (the loader un-permutes wq / wk rows).
            rows = torch.cdist(base.weight.detach(), mine.weight.detach()).argmin(dim=1)
            if not torch.equal(base.weight, mine.weight[rows]):
                raise BenchmarkError(f"{ours_name}: base weights differ after loading")
            with torch.no_grad():
                a.copy_(mine.lora_A)
                b.copy_(mine.lora_B[rows])
            a.requires_grad = b.requires_grad = True
            lora_params += [a, b]
    return ours, hf, lora_params


def make_batch(size: Size, vocab: int, dictionary: BenchDictionary, device: torch.device):
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(3, vocab, (size.batch, size.prompt_len), generator=g)
    target = torch.randint(3, vocab, (size.batch, size.target_len), generator=g)
    empty = torch.full((size.batch, 1), dictionary.pad())
    net_input = dict(
        src_tokens=prompt, src_lengths=torch.full((size.batch,), size.prompt_len),
        prefix_tokens=prompt, prefix_lengths=torch.full((size.batch,), size.prompt_len),
        suffix_tokens=empty, suffix_lengths=torch.zeros(size.batch, dtype=torch.long),
        waves=torch.zeros(size.batch, 1), wave_lengths=torch.zeros(size.batch, dtype=torch.long),
    )
    prev = torch.cat([torch.full((size.batch, 1), dictionary.eos()), target[:, :-1]], dim=1)
    net_input = {k: v.to(device) for k, v in net_input.items()}
    return prompt.to(device), target.to(device), net_input, prev.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MIN_SAMPLE_SECONDS = 0.2
"""A timing sample repeats a call until it lasts about this long: one tiny-model step is ~10 ms."""


def timed_pair(first: Callable[[], object], second: Callable[[], object], repeats: int, what: str,
               device: torch.device) -> Tuple[float, float]:
    """Median seconds per call of each of two calls, sampled alternately (first, second, then
    second, first, ...) so that a machine whose speed drifts slows both alike."""
    print(f"  {what} ...", file=sys.stderr, flush=True)

    def seconds(fn: Callable[[], object], calls: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        return (time.perf_counter() - start) / calls

    calls = max(1, math.ceil(MIN_SAMPLE_SECONDS / max(seconds(first, 1), seconds(second, 1))))  # also the warm-up
    times: Tuple[List[float], List[float]] = ([], [])
    for i in range(repeats):
        order = ((0, first), (1, second)) if i % 2 == 0 else ((1, second), (0, first))
        for slot, fn in order:
            times[slot].append(seconds(fn, calls))
    return statistics.median(times[0]), statistics.median(times[1])


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """GiB of GPU memory at the peak of one call, beyond what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**30


def check_equal(what: str, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    if ours.shape != theirs.shape or not torch.equal(ours, theirs):
        differ = (ours != theirs).sum().item() if ours.shape == theirs.shape else "shape"
        raise BenchmarkError(f"{what}: ours and transformers differ ({differ} tokens; "
                             f"shapes {tuple(ours.shape)} / {tuple(theirs.shape)})")


def end_of_turn_at(length: int):
    """A transformers logits processor doing what fairseq's generator does at its last step: only
    the end of turn is allowed, at its own log-probability (transformers' ``forced_eos_token_id``
    sets it to 0 instead, which ranks beam-4 hypotheses differently)."""
    from transformers import LogitsProcessor

    class EndOfTurnAt(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if input_ids.shape[1] != length - 1:
                return scores
            only_eos = torch.full_like(scores, float("-inf"))
            only_eos[:, EOS] = scores[:, EOS]
            return only_eos

    return EndOfTurnAt()


GENERATION_CALLS = (("same", 1), ("same", 4), ("plain", 1), ("plain", 4))
"""(transformers call, beam): ``same`` does fairseq's work (n new tokens, then the end of turn
forced), ``plain`` is generate(num_beams, use_cache=True) as users call it."""


def profile_table(fn: Callable[[], object], rows: int) -> str:
    """torch.profiler's operators by their own time over three calls of fn (after one warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as p:
        for _ in range(3):
            fn()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def bench_size(name: str, size: Size, repeats: int, device: torch.device, dtype: torch.dtype,
               profile_rows: int = 0) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        ours, hf, hf_lora = build_pair(size, folder)
    ours.to(device), hf.to(device)
    dictionary = ours.decoder.dictionary
    vocab = dictionary.vocab_size
    prompt, target, net_input, prev = make_batch(size, vocab, dictionary, device)
    hf_input = torch.cat([prompt, target[:, :-1]], dim=1)
    results: Dict[str, float] = {}
    n_new = size.target_len

    def ours_loss():
        logits = ours(prev_output_tokens=prev, **net_input)[0]
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten()), logits[..., :vocab]

    def hf_loss():
        logits = hf(input_ids=hf_input, logits_to_keep=size.target_len).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten()), logits

    # Checks, in float32, before anything is timed.
    ours.eval(), hf.eval()
    with torch.no_grad():
        (ours_l, ours_logits), (hf_l, hf_logits) = ours_loss(), hf_loss()
    results["max_abs_logit_diff"] = float((ours_logits - hf_logits).abs().max())
    if ours_logits.shape != hf_logits.shape or results["max_abs_logit_diff"] > LOGIT_TOLERANCE:
        raise BenchmarkError(f"training logits differ by {results['max_abs_logit_diff']:.2e} "
                             f"(> {LOGIT_TOLERANCE:g}), shapes {tuple(ours_logits.shape)} / {tuple(hf_logits.shape)}")
    if abs(ours_l.item() - hf_l.item()) > LOGIT_TOLERANCE:
        raise BenchmarkError(f"training loss differs: ours {ours_l.item()} transformers {hf_l.item()}")

    # Generation as each stack's user runs it: LoRA merged into the base weights on both sides.
    ours_gen = copy.deepcopy(ours)
    ours_gen.prepare_for_inference_(OmegaConf.create({"generation": {"beam": 1}}))
    hf_gen = copy.deepcopy(hf).merge_and_unload()
    sample = {"net_input": net_input}
    generators = {beam: SequenceGenerator([ours_gen], dictionary, beam_size=beam, max_len_a=0, max_len_b=n_new,
                                          min_len=n_new) for beam in (1, 4)}
    hf_kwargs = {
        "same": dict(max_new_tokens=n_new + 1, min_new_tokens=n_new,
                     logits_processor=[end_of_turn_at(size.prompt_len + n_new + 1)]),
        # One token more than ours writes before its end of turn: the same number of forward passes.
        "plain": dict(max_new_tokens=n_new + 1),
    }

    def ours_generate(beam: int) -> torch.Tensor:
        produced = generators[beam].generate([ours_gen], sample)
        return torch.stack([hyps[0]["tokens"] for hyps in produced])

    def hf_generate(call: str, beam: int) -> torch.Tensor:
        return hf_gen.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), num_beams=beam,
                               use_cache=True, do_sample=False, eos_token_id=EOS, pad_token_id=0,
                               **hf_kwargs[call])[:, size.prompt_len:]

    with torch.no_grad():
        for call, beam in GENERATION_CALLS:
            mine, theirs = ours_generate(beam), hf_generate(call, beam)
            if call == "same":
                check_equal(f"beam {beam}, same work", mine, theirs)
            elif beam == 1:
                check_equal(f"beam {beam}, generate() as called by users (first {n_new} tokens)",
                            mine[:, :n_new], theirs[:, :n_new])
            # At beam 4 the plain call's last step ranks hypotheses by their best token, not by the
            # end of turn, so its answers differ by design; the same-work call checks beam 4.

    def greedy(use_cache: bool) -> torch.Tensor:
        encoder_out = ours_gen.encoder(**net_input)
        tokens = torch.full((size.batch, 1), dictionary.eos(), device=device)
        state: Dict = {} if use_cache else None
        for _ in range(n_new):
            logits = ours_gen.decoder(tokens, encoder_out=encoder_out, incremental_state=state)[0][:, -1]
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
        return tokens

    with torch.no_grad():
        if not torch.equal(greedy(True), greedy(False)):
            raise BenchmarkError("greedy decoding with our KV cache differs from recomputation")

    # Timing, in the requested dtype.
    for model in (ours, hf, ours_gen, hf_gen):
        model.to(dtype)
    ours_lora = [p for n, p in ours.named_parameters() if n.endswith((".lora_A", ".lora_B"))]
    ours_opt, hf_opt = torch.optim.Adam(ours_lora, lr=1e-4), torch.optim.Adam(hf_lora, lr=1e-4)

    def step(loss_fn, optimizer):
        loss_fn()[0].backward()
        optimizer.step()
        optimizer.zero_grad()

    ours.train(), hf.train()
    if profile_rows:
        training = (("ours", lambda: step(ours_loss, ours_opt)), ("transformers + peft", lambda: step(hf_loss, hf_opt)))
        for side, fn in training:
            print(f"{name}: training step, {side}\n{profile_table(fn, profile_rows)}", flush=True)
        with torch.no_grad():
            decoding = (("ours", lambda: ours_generate(4)), ("transformers + peft", lambda: hf_generate("same", 4)))
            for side, fn in decoding:
                print(f"{name}: generation, beam 4, {side}\n{profile_table(fn, profile_rows)}", flush=True)
    ours_time, hf_time = timed_pair(lambda: step(ours_loss, ours_opt), lambda: step(hf_loss, hf_opt), repeats,
                                    "train", device)
    results["train_ours"], results["train_hf"] = size.batch / ours_time, size.batch / hf_time
    if device.type == "cuda":
        results["train_gib_ours"] = peak_memory(lambda: step(ours_loss, ours_opt), device)
        results["train_gib_hf"] = peak_memory(lambda: step(hf_loss, hf_opt), device)

    with torch.no_grad():
        for call, beam in GENERATION_CALLS:
            ours_time, hf_time = timed_pair(lambda: ours_generate(beam), lambda: hf_generate(call, beam), repeats,
                                            f"beam {beam}, transformers {call}", device)
            results[f"gen_{call}_beam{beam}_ours"] = size.batch * n_new / ours_time
            results[f"gen_{call}_beam{beam}_hf"] = size.batch * n_new / hf_time
        cache_time, nocache_time = timed_pair(lambda: greedy(True), lambda: greedy(False), repeats,
                                              "greedy, KV cache and not", device)
    results["greedy_cache"] = size.batch * n_new / cache_time
    results["greedy_nocache"] = size.batch * n_new / nocache_time
    return results


MEASURES = (
    ("train", "train examples/s (LoRA unmerged, logits_to_keep)"),
    ("gen_same_beam1", "generate tokens/s, beam 1, same work"),
    ("gen_same_beam4", "generate tokens/s, beam 4, same work"),
    ("gen_plain_beam1", "generate tokens/s, beam 1, vs generate(num_beams=1)"),
    ("gen_plain_beam4", "generate tokens/s, beam 4, vs generate(num_beams=4)"),
)


def report(all_results: Dict[str, Dict[str, float]], sizes: Dict[str, Size]) -> str:
    lines = ["| size | measure | ours | transformers + peft | ours / transformers |", "|---|---|---:|---:|---:|"]
    for name, r in all_results.items():
        s = sizes[name]
        label = f"{name} ({s.llm_preset}, B={s.batch}, prompt {s.prompt_len}, {s.target_len} tokens)"
        for key, measure in MEASURES:
            ours, hf = r[f"{key}_ours"], r[f"{key}_hf"]
            lines.append(f"| {label} | {measure} | {ours:.1f} | {hf:.1f} | {ours / hf:.2f} |")
        if "train_gib_ours" in r:
            ours, hf = r["train_gib_ours"], r["train_gib_hf"]
            lines.append(f"| {label} | training step peak GPU GiB | {ours:.2f} | {hf:.2f} | {ours / hf:.2f} |")
        lines.append(f"| {label} | greedy tokens/s: KV cache vs recompute | {r['greedy_cache']:.1f} | "
                     f"{r['greedy_nocache']:.1f} (ours, no cache) | {r['greedy_cache'] / r['greedy_nocache']:.2f} |")
    notes = [f"- {name}: checked in float32 before timing: max |logit diff| {r['max_abs_logit_diff']:.2e}, "
             "generated tokens equal (same-work calls; the plain call at beam 1), KV cache == recomputation"
             for name, r in all_results.items()]
    return "\n".join(lines + [""] + notes)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "small"])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="tiny size only, 2 repeats")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="both stacks' weights and activations while timing (checks run in float32)")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print torch.profiler's top ROWS operators of a training step and a beam-4 "
                             "generation call of each side")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 by default because on a shared machine multi-threaded "
                             "kernels that wait for a busy core made single runs up to 100x slower")
    args = parser.parse_args(argv)
    try:
        require_peft()
    except BenchmarkError as e:
        sys.exit(f"stack_speed.py: error: {e}")
    torch.set_num_threads(args.threads)
    sizes = ["tiny"] if args.quick else args.sizes
    repeats = 2 if args.quick else args.repeats
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {where}, {args.dtype}; load average {load}")
    results = {}
    for name in sizes:
        start = time.perf_counter()
        try:
            results[name] = bench_size(name, SIZES[name], repeats, device, dtype, args.profile)
        except BenchmarkError as e:
            sys.exit(f"stack_speed.py: error: {name}: {e}")
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        print(report({name: results[name]}, SIZES), flush=True)  # each size as soon as it is measured
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
