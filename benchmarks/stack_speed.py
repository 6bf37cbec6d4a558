"""Our LLM stack against the same model assembled from transformers, with identical weights.

Ours: ``WavLLMModel`` (text-only rows, so the speech encoders are skipped) trained the way
fairseq trains it and decoded with fairseq's ``SequenceGenerator``. Theirs: ``LlamaForCausalLM``
with the same LoRA (peft when installed, else a minimal LoRA wrapper on q/k/v/o written here)
decoded with ``generate``. The base weights go through ``save_pretrained`` and our own Hugging
Face loader; the LoRA matrices (B made non-zero, so LoRA changes the output) are copied across,
rows permuted where the loader un-permuted wq / wk. Logits are compared before timing.

Measured, per size: training steps (forward, backward, Adam on the LoRA parameters) in
examples/s; generation in new tokens/s at beam 1 and beam 4 (a fixed number of new tokens, end
of turn blocked until then and written after them by both stacks); and our greedy decoding with
the KV cache against recomputing the whole sequence each step. Times are medians of --repeats
samples after one warm-up call (a sample repeats a short call until it lasts ~0.2 s), the two
sides of a comparison alternating so that a machine whose speed drifts slows both alike, on
--threads CPU threads (1 by default) or on a GPU (--device cuda, where the peak GPU memory of a
training step is reported too).

    python benchmarks/stack_speed.py [--sizes tiny small] [--quick]
    python benchmarks/stack_speed.py --device cuda --dtype bfloat16 --sizes small_gpu 1b_gpu
"""
from __future__ import annotations

import argparse
import importlib.util
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fairseq.data import Dictionary  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402

from wavllm_fairseq.models.llama import LLAMA_PRESETS  # noqa: E402
from wavllm_fairseq.models.wavllm import ARCHITECTURES, WavLLMConfig, WavLLMModel  # noqa: E402

LORA_TARGETS = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj"}
"""Our attention projections and their transformers names."""


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
        self.unk_index, self.bos_index, self.eos_index, self.pad_index = 0, 1, 2, vocab_size
        self.nspecial = 3
        self.vocab_size = vocab_size


class HFLoraLinear(nn.Module):
    """Minimal LoRA around a frozen transformers projection (used when peft is not installed)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_A = nn.Parameter(torch.zeros(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


def hf_config(preset: str):
    from transformers import LlamaConfig as HFLlamaConfig

    c = LLAMA_PRESETS[preset]
    return HFLlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, max_position_embeddings=c.max_seq_len, tie_word_embeddings=c.tie_embeddings,
        bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )


def build_pair(size: Size, folder: str):
    """(our WavLLMModel, transformers model with LoRA, the LoRA library used), with identical weights."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    hf = LlamaForCausalLM(hf_config(size.llm_preset)).float()
    hf.save_pretrained(folder)
    vocab = hf.config.vocab_size
    arch = dict(ARCHITECTURES["wavllm_tiny"], llm_path=folder, lora_rank=size.lora_rank,
                lora_alpha=2.0 * size.lora_rank, lora_dropout=0.0)
    ours = WavLLMModel.build_model(WavLLMConfig(**arch), SimpleNamespace(target_dictionary=BenchDictionary(vocab)))
    for layer in ours.decoder.llm.lora_layers():
        nn.init.normal_(layer.lora_B, std=0.02)

    if importlib.util.find_spec("peft") is not None:
        from peft import LoraConfig as PeftLoraConfig, get_peft_model

        hf = get_peft_model(hf, PeftLoraConfig(r=size.lora_rank, lora_alpha=2.0 * size.lora_rank, lora_dropout=0.0,
                                               target_modules=list(LORA_TARGETS.values())))
        library = "peft"
    else:
        for block in hf.model.layers:
            for name in LORA_TARGETS.values():
                setattr(block.self_attn, name, HFLoraLinear(getattr(block.self_attn, name), size.lora_rank,
                                                            2.0 * size.lora_rank))
        library = "minimal wrapper (peft not installed)"
    for p in hf.parameters():
        p.requires_grad = False
    lora_params = []
    layers = hf.get_base_model().model.layers if library == "peft" else hf.model.layers
    for ours_block, hf_block in zip(ours.decoder.llm.layers, layers):
        for ours_name, hf_name in LORA_TARGETS.items():
            mine, theirs = getattr(ours_block.attention, ours_name), getattr(hf_block.self_attn, hf_name)
            if library == "peft":
                a, b, base = theirs.lora_A["default"].weight, theirs.lora_B["default"].weight, theirs.base_layer
            else:
                a, b, base = theirs.lora_A, theirs.lora_B, theirs.base
            # Which of our rows each of their rows is (the loader un-permutes wq / wk rows).
            rows = torch.cdist(base.weight.detach(), mine.weight.detach()).argmin(dim=1)
            assert torch.equal(base.weight, mine.weight[rows]), (ours_name, "weights differ")
            with torch.no_grad():
                a.copy_(mine.lora_A)
                b.copy_(mine.lora_B[rows])
            a.requires_grad = b.requires_grad = True
            lora_params += [a, b]
    return ours, hf, library, lora_params


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


def bench_size(name: str, size: Size, repeats: int, device: torch.device, dtype: torch.dtype) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        ours, hf, library, hf_lora = build_pair(size, folder)
    ours.to(device, dtype), hf.to(device, dtype)
    dictionary = ours.decoder.dictionary
    vocab = dictionary.vocab_size
    prompt, target, net_input, prev = make_batch(size, vocab, dictionary, device)
    hf_input = torch.cat([prompt, target[:, :-1]], dim=1)
    results: Dict[str, float] = {"library": library}

    ours.eval(), hf.eval()
    with torch.no_grad():
        ours_logits = ours(prev_output_tokens=prev, **net_input)[0][..., :vocab]
        hf_logits = hf(input_ids=hf_input).logits[:, size.prompt_len - 1:]
    results["max_abs_logit_diff"] = float((ours_logits - hf_logits).abs().max())

    ours_lora = [p for n, p in ours.named_parameters() if n.endswith((".lora_A", ".lora_B"))]
    ours_opt, hf_opt = torch.optim.Adam(ours_lora, lr=1e-4), torch.optim.Adam(hf_lora, lr=1e-4)

    def ours_step():
        logits = ours(prev_output_tokens=prev, **net_input)[0]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())
        loss.backward()
        ours_opt.step()
        ours_opt.zero_grad()

    def hf_step():
        logits = hf(input_ids=hf_input).logits[:, size.prompt_len - 1:]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten())
        loss.backward()
        hf_opt.step()
        hf_opt.zero_grad()

    ours.train(), hf.train()
    ours_time, hf_time = timed_pair(ours_step, hf_step, repeats, "train", device)
    results["train_ours"], results["train_hf"] = size.batch / ours_time, size.batch / hf_time
    if device.type == "cuda":
        results["train_gib_ours"] = peak_memory(ours_step, device)
        results["train_gib_hf"] = peak_memory(hf_step, device)
    ours.eval(), hf.eval()
    # As fairseq-generate runs it: LoRA folded into the base weights (no prompt adapter here).
    # The transformers side keeps LoRA separate, as peft runs it unless merged by hand.
    ours.prepare_for_inference_(OmegaConf.create({"generation": {"beam": 1}}))

    n_new = size.target_len
    sample = {"net_input": net_input}
    for beam in (1, 4):
        generator = SequenceGenerator([ours], dictionary, beam_size=beam, max_len_a=0, max_len_b=n_new,
                                      min_len=n_new)
        with torch.no_grad():
            produced = generator.generate([ours], sample)
            hyp_len = len(produced[0][0]["tokens"]) - 1  # minus the final end of turn
        assert hyp_len == n_new, (hyp_len, n_new)
        # Both stacks write n_new tokens and then the end of turn, which costs fairseq's generator a
        # forward pass of its own: transformers is made to write it too (forced at the last position).
        gen_kwargs = dict(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n_new + 1,
                          min_new_tokens=n_new, forced_eos_token_id=2, num_beams=beam, do_sample=False,
                          eos_token_id=2, pad_token_id=0)
        with torch.no_grad():
            hf_tokens = hf.generate(**gen_kwargs)
        assert hf_tokens.shape[1] == size.prompt_len + n_new + 1 and (hf_tokens[:, -1] == 2).all(), hf_tokens.shape
        with torch.no_grad():
            ours_time, hf_time = timed_pair(lambda: generator.generate([ours], sample),
                                            lambda: hf.generate(**gen_kwargs), repeats, f"beam {beam}", device)
        results[f"gen_beam{beam}_ours"] = size.batch * n_new / ours_time
        results[f"gen_beam{beam}_hf"] = size.batch * n_new / hf_time

    def greedy(use_cache: bool) -> torch.Tensor:
        encoder_out = ours.encoder(**net_input)
        tokens = torch.full((size.batch, 1), dictionary.eos(), device=device)
        state: Dict = {} if use_cache else None
        for _ in range(n_new):
            logits = ours.decoder(tokens, encoder_out=encoder_out, incremental_state=state)[0][:, -1]
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
        return tokens

    with torch.no_grad():
        same = (greedy(True) == greedy(False)).float().mean().item()
        # Exact in float32; in bfloat16 the two orders of summation may round a near-tie apart.
        assert same == 1.0 or dtype != torch.float32, "KV-cache decoding differs from recomputation"
        results["cache_token_agreement"] = same
        cache_time, nocache_time = timed_pair(lambda: greedy(True), lambda: greedy(False), repeats,
                                              "greedy, KV cache and not", device)
        results["greedy_cache"] = size.batch * n_new / cache_time
        results["greedy_nocache"] = size.batch * n_new / nocache_time
    return results


def report(all_results: Dict[str, Dict[str, float]], sizes: Dict[str, Size]) -> str:
    lines = ["| size | measure | ours | transformers | ours / transformers |", "|---|---|---:|---:|---:|"]
    for name, r in all_results.items():
        s = sizes[name]
        label = f"{name} ({s.llm_preset}, B={s.batch}, prompt {s.prompt_len}, {s.target_len} tokens)"
        for key, measure in (("train", "train examples/s"), ("gen_beam1", "generate tokens/s, beam 1"),
                             ("gen_beam4", "generate tokens/s, beam 4")):
            ours, hf = r[f"{key}_ours"], r[f"{key}_hf"]
            lines.append(f"| {label} | {measure} | {ours:.1f} | {hf:.1f} | {ours / hf:.2f} |")
        if "train_gib_ours" in r:
            ours, hf = r["train_gib_ours"], r["train_gib_hf"]
            lines.append(f"| {label} | training step peak GPU GiB | {ours:.2f} | {hf:.2f} | {ours / hf:.2f} |")
        lines.append(f"| {label} | greedy tokens/s: KV cache vs recompute | {r['greedy_cache']:.1f} | "
                     f"{r['greedy_nocache']:.1f} (ours, no cache) | {r['greedy_cache'] / r['greedy_nocache']:.2f} |")
    notes = [f"- {name}: LoRA on transformers via {r['library']}; max |logit diff| ours vs transformers "
             f"{r['max_abs_logit_diff']:.2e}; greedy tokens equal with and without KV cache: "
             f"{100 * r['cache_token_agreement']:.1f}%" for name, r in all_results.items()]
    return "\n".join(lines + [""] + notes)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["tiny", "small"])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="tiny size only, 2 repeats")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="both stacks' weights and activations")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; 1 by default because on a shared machine multi-threaded "
                             "kernels that wait for a busy core made single runs up to 100x slower")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = ["tiny"] if args.quick else args.sizes
    repeats = 2 if args.quick else args.repeats
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"torch {torch.__version__}, {where}, {args.dtype}")
    results = {}
    for name in sizes:
        start = time.perf_counter()
        results[name] = bench_size(name, SIZES[name], repeats, device, dtype)
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        print(report({name: results[name]}, SIZES), flush=True)  # each size as soon as it is measured


if __name__ == "__main__":
    main()
