"""The whole WavLLM model: a training step and fairseq-generate's decoding, split by component.

Random weights of the named shapes, random waves of a fixed clip length, random instruction and
answer tokens; the model is built as fairseq builds it (``WavLLMModel.build_model``), trained
with the loss of ``wavllm_cross_entropy`` (log-softmax over the vocabulary, gathered at the
targets) and Adam on what trains, and decoded with fairseq's ``SequenceGenerator`` as
fairseq-generate runs it (``prepare_for_inference_`` first).

Per size, clip length and batch size it reports:
- training examples/s and where a step's time goes: the forward pass of each component (Whisper,
  WavLM, adapters = the two speech branches, the layer-weighted sum and the fusion, the
  prompt-aware LoRA weight's adapter, prompt assembly = the rest of the encoder, LLM blocks, which
  include the instruction's pass without LoRA for the prompt-aware weight, output layer, loss)
  and the backward pass with the optimiser step (not split: autograd runs it as one);
- with Whisper padded to 30 s (as the released model and Hugging Face's feature extractor do)
  against unpadded, and so the share of a padded step spent on padding;
- the encoder-output cache (``whisper_cache_dir``): a step that reads Whisper's output from the
  cache (every epoch after the first) against one that computes it, and what the first epoch's
  writes cost;
- decoding: new tokens/s at beam 1 and beam 4, split into the encoder (speech encoders,
  adapters, prompt), LLM blocks (prompt and steps), output layer, KV-cache reordering, and the
  generator's own bookkeeping (the rest of ``SequenceGenerator.generate``).
On a GPU (``--device cuda``) it also reports the peak memory of a step and the model-FLOPs
utilisation of the training step (:func:`training_flops`, the formula in benchmarks/README.md).

Times are medians of --repeats calls after one warm-up call; the unpadded, padded and
cache-reading training steps take turns, so that a machine whose speed drifts slows them alike
(the first, cache-writing step is a single call). On --threads CPU threads (1 by
default: the machine is shared) or on a GPU. Component times are exclusive (a component's time
excludes the components it calls) and measured with host timers, with a device synchronisation
on each boundary under CUDA (which costs a little on its own).

    python benchmarks/wavllm_speed.py --quick                        # demo size, a few minutes on a CPU
    python benchmarks/wavllm_speed.py --sizes demo small --clips 5 15 30 60 --batches 1 4
    python benchmarks/wavllm_speed.py --device cuda --dtype bfloat16 --sizes 7b --clips 5 15 30 --batches 8
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Tuple

import soundfile
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fairseq.sequence_generator import SequenceGenerator

from wavllm_fairseq.data.audio import SAMPLE_RATE
from wavllm_fairseq.models.wavllm import WavLLMConfig, WavLLMModel

from stack_speed import EOS, BenchDictionary  # beside this script


@dataclass
class WholeSize:
    """One model size: overrides of WavLLMConfig, and the text around the speech."""

    model: Dict[str, object]
    """WavLLMConfig fields (presets, LoRA, training of WavLM, activation checkpointing)."""
    vocab_size: int
    """Tokenizer ids (random tokens are drawn below it)."""
    instruction_tokens: int = 24
    """Prompt text before and after the speech, together."""
    answer_tokens: int = 24
    """Target tokens per example in training; new tokens per example in decoding."""


SIZES = {
    # The demo's model (examples/wavllm/config/demo_stage2.yaml, the text LM of examples/wavllm/text_lm.py).
    "demo": WholeSize(dict(whisper_preset="tiny.en", wavlm_preset="small", train_wavlm=True,
                           llm_preset='{"dim": 192, "n_layers": 3, "n_heads": 8, "n_kv_heads": 8, '
                                      '"vocab_size": 800, "ffn_dim": 512, "max_seq_len": 4096}',
                           lora_rank=16, lora_alpha=32.0, lora_dropout=0.0, prompt_adapter=True),
                      vocab_size=800),
    # examples/wavllm/config/small_stage2.yaml: Whisper tiny.en, WavLM Base+ (trained), SmolLM2-135M.
    "small": WholeSize(dict(whisper_preset="tiny.en", wavlm_preset="base_plus", train_wavlm=True,
                            llm_preset="smollm2_135m", lora_rank=16, lora_alpha=32.0, lora_dropout=0.0,
                            prompt_adapter=True),
                       vocab_size=49152),
    # The paper's model (GPU): Whisper large-v2, WavLM Base+ (frozen), LLaMA-2-7B with LoRA rank 32
    # on q, k, v, o, activation checkpointing.
    "7b": WholeSize(dict(whisper_preset="large-v2", wavlm_preset="base_plus", llm_preset="llama2_7b",
                         lora_rank=32, lora_alpha=32.0, lora_dropout=0.0, prompt_adapter=True,
                         activation_checkpointing=True),
                    vocab_size=32000),
}

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bfloat16 peak of GPUs by name fragment, for the utilisation (--peak-tflops overrides)."""


class ComponentClock:
    """Exclusive seconds per component: methods wrapped by :meth:`wrap` add their time minus the
    time of wrapped methods they call."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: Dict[str, float] = {}
        self._children: List[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, owner, method: str, component: str) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            with self.part(component):
                return inner(*args, **kwargs)

        setattr(owner, method, timed)

    @contextlib.contextmanager
    def part(self, component: str):
        self._sync()
        start = time.perf_counter()
        self._children.append(0.0)
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - start
            nested = self._children.pop()
            self.seconds[component] = self.seconds.get(component, 0.0) + elapsed - nested
            if self._children:
                self._children[-1] += elapsed


def build(size: WholeSize, pad_to_30s: bool, cache_dir: Optional[str], device, dtype) -> WavLLMModel:
    torch.manual_seed(0)
    cfg = WavLLMConfig(**size.model, whisper_pad_to_30s=pad_to_30s, whisper_cache_dir=cache_dir)
    model = WavLLMModel.build_model(cfg, SimpleNamespace(target_dictionary=BenchDictionary(size.vocab_size)))
    return model.to(device=device, dtype=dtype)


def instrument(model: WavLLMModel, clock: ComponentClock) -> None:
    enc, llm = model.encoder, model.decoder.llm
    clock.wrap(enc.whisper, "encode_waves", "Whisper")
    clock.wrap(enc.wavlm, "forward", "WavLM")
    for module in (enc.wavlm_layer_weights, enc.whisper_branch, enc.wavlm_branch, enc.fusion):
        clock.wrap(module, "forward", "adapters")
    clock.wrap(enc, "prompt_lora_weight", "prompt-aware LoRA weight")
    clock.wrap(enc, "forward", "prompt assembly")
    clock.wrap(llm, "forward", "LLM blocks")
    clock.wrap(llm, "output_logits", "output layer")
    clock.wrap(model.decoder, "forward", "decoder glue")
    clock.wrap(model.decoder, "reorder_incremental_state", "KV-cache reorder")
    clock.wrap(enc, "reorder_encoder_out", "KV-cache reorder")


def make_batch(size: WholeSize, clip_seconds: float, batch: int, device, dtype):
    g = torch.Generator().manual_seed(1)
    n_samples = int(clip_seconds * SAMPLE_RATE)
    before = size.instruction_tokens // 2
    after = size.instruction_tokens - before

    def tokens(n):
        return torch.randint(3, size.vocab_size, (batch, n), generator=g)

    prefix, suffix, target = tokens(before), tokens(after), tokens(size.answer_tokens)
    net_input = dict(
        src_tokens=torch.cat([prefix, suffix], 1), src_lengths=torch.full((batch,), size.instruction_tokens),
        prefix_tokens=prefix, prefix_lengths=torch.full((batch,), before),
        suffix_tokens=suffix, suffix_lengths=torch.full((batch,), after),
        waves=0.1 * torch.randn(batch, n_samples, generator=g), wave_lengths=torch.full((batch,), n_samples),
    )
    net_input = {k: v.to(device) for k, v in net_input.items()}
    net_input["waves"] = net_input["waves"].to(dtype)
    prev = torch.cat([torch.full((batch, 1), EOS), target[:, :-1]], dim=1).to(device)
    return net_input, prev, target.to(device)


def median_times(calls: Dict[str, Callable[[], object]], repeats: int, device) -> Dict[str, float]:
    """Median seconds of each call over ``repeats`` samples after one warm-up, the calls taking
    turns (in a rotating order) so that a machine whose speed drifts slows them alike."""
    names = list(calls)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(repeats + 1):  # the first round warms up
        for name in names[i % len(names):] + names[:i % len(names)]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            calls[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@dataclass
class StepResult:
    seconds: float
    components: Dict[str, float] = field(default_factory=dict)
    peak_gib: Optional[float] = None


def train_step_fn(model: WavLLMModel, net_input, prev, target, clock: Optional[ComponentClock],
                  audio_paths: Optional[List[List[str]]] = None):
    vocab = model.decoder.vocab_size
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-5)
    no_clock = contextlib.nullcontext()

    def step():
        extra = {} if audio_paths is None else {"audio_paths": audio_paths}  # as a batch carries them
        logits, _ = model(prev_output_tokens=prev, **net_input, **extra)
        with clock.part("loss") if clock else no_clock:
            lprobs = F.log_softmax(logits[..., :vocab].float(), dim=-1)
            loss = -lprobs.gather(-1, target[..., None]).sum()
        with clock.part("backward + optimiser") if clock else no_clock:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def write_clips(waves: torch.Tensor, folder: str) -> List[List[str]]:
    """Each row's wave as a 16 kHz file, as a batch's ``audio_paths``: the encoder cache keys its
    entries by the files (path, size, modification time)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, wave in enumerate(waves.float().cpu().numpy()):
        paths.append([os.path.join(folder, f"clip{i}.wav")])
        soundfile.write(paths[-1][0], wave, SAMPLE_RATE)
    return paths


@dataclass
class TrainingResult:
    unpadded: StepResult
    padded: Optional[StepResult]
    cache_hit: Optional[float]
    """Seconds of a step that reads Whisper's output from the cache (epochs after the first)."""
    cache_first: Optional[float]
    """Seconds of the one step that computes and writes it (the first epoch), a single sample."""


def measure_training(size, clip, batch, repeats, device, dtype, skip: set) -> TrainingResult:
    """Unpadded, padded-to-30-s and cache-reading steps of the same batch, sampled in turns."""
    net_input, prev, target = make_batch(size, clip, batch, device, dtype)
    steps, clocks = {}, {}
    with tempfile.TemporaryDirectory() as cache_dir:
        variants = [("unpadded", False, None)]
        if "pad" not in skip:
            variants.append(("padded", True, None))
        if "cache" not in skip:
            variants.append(("cache", False, cache_dir))
        for name, pad_to_30s, cache in variants:
            model = build(size, pad_to_30s, cache, device, dtype).train()
            clocks[name] = ComponentClock(device)
            instrument(model, clocks[name])
            paths = write_clips(net_input["waves"], os.path.join(cache_dir, "clips")) if cache else None
            steps[name] = train_step_fn(model, net_input, prev, target, clocks[name], paths)
            if cache:
                train_step_fn(model, net_input, prev, target, None)()  # warm-up without the cache
        cache_first = None
        if "cache" in steps:
            start = time.perf_counter()
            steps["cache"]()  # the first epoch: computes Whisper's output and writes it
            cache_first = time.perf_counter() - start
            if not any(n.endswith(".pt") for _, _, names in os.walk(cache_dir) for n in names):
                raise RuntimeError("the cache-reading step wrote no cache entry: its figures would be "
                                   "those of a step without the cache")
        for clock in clocks.values():
            clock.seconds.clear()
        seconds = median_times(steps, repeats, device)
    calls = repeats + 1
    results = {name: StepResult(seconds[name], {k: v / calls for k, v in clocks[name].seconds.items()})
               for name in steps}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        steps["unpadded"]()
        results["unpadded"].peak_gib = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    return TrainingResult(results["unpadded"], results.get("padded"),
                          results["cache"].seconds if "cache" in results else None, cache_first)


def measure_decoding(size, clip, batch, beam, repeats, device, dtype) -> StepResult:
    model = build(size, False, None, device, dtype).eval()
    model.prepare_for_inference_(OmegaConf.create({"generation": {"beam": beam}}))
    net_input, _, _ = make_batch(size, clip, batch, device, dtype)
    dictionary = model.decoder.dictionary
    n_new = size.answer_tokens
    generator = SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=0, max_len_b=n_new, min_len=n_new)
    clock = ComponentClock(device)
    instrument(model, clock)
    sample = {"net_input": net_input}

    def decode():
        with torch.no_grad(), clock.part("generator bookkeeping"):
            generator.generate([model], sample)

    clock.seconds.clear()
    seconds = median_times({"decode": decode}, repeats, device)["decode"]
    calls = repeats + 1
    return StepResult(seconds, {k: v / calls for k, v in clock.seconds.items()})


def llm_linear_params(model: WavLLMModel) -> Tuple[int, int]:
    """(weights of the LLM blocks' projections, of the output layer)."""
    llm = model.decoder.llm
    blocks = sum(p.numel() for n, p in llm.layers.named_parameters() if n.endswith(".weight") and p.dim() == 2)
    return blocks, llm.output.weight.numel()


def training_flops(model: WavLLMModel, batch: int, prompt_len: int, answer_len: int, whisper_frames: int,
                   wavlm_frames: int) -> float:
    """Model FLOPs of one training step (no recomputation counted), from the layer sizes:
    a matrix product of an in x out weight costs 2 in out per token forward; its backward costs as
    much again for the input's gradient and, for a trained weight, once more for the weight's.
    LLM: frozen base weights over every position (forward + input gradient: 4 P_blocks T), LoRA
    and the output layer on the answer positions only for the logits; causal attention
    2 x 2 n_layers T^2 dim / 2 forward, twice that backward. Whisper: forward only (frozen),
    2 P_whisper F_w + 2 n_layers F_w^2 dim. WavLM: its transformer layers' 2 P F (x3 when trained),
    the convolutional front end left out. The speech adapters are left out (under 1%)."""
    llm = model.decoder.llm
    cfg = llm.cfg
    blocks, output = llm_linear_params(model)
    tokens = prompt_len + answer_len
    lora = sum(p.numel() for n, p in llm.named_parameters() if p.requires_grad)
    llm_flops = batch * (4 * blocks * tokens + 6 * lora * tokens + 4 * output * answer_len
                         + 3 * 2 * cfg.n_layers * tokens ** 2 * cfg.dim)
    enc = model.encoder
    w = enc.whisper
    whisper_params = sum(p.numel() for p in w.blocks.parameters() if p.dim() == 2) if hasattr(w, "blocks") else 0
    whisper_flops = batch * (2 * whisper_params * whisper_frames
                             + 4 * w.cfg.n_audio_layer * whisper_frames ** 2 * w.cfg.n_audio_state)
    wavlm_params = sum(p.numel() for p in enc.wavlm.encoder.layers.parameters() if p.dim() == 2)
    wavlm_factor = 2 if enc.wavlm in enc.frozen else 6
    wavlm_flops = batch * wavlm_factor * wavlm_params * wavlm_frames
    return llm_flops + whisper_flops + wavlm_flops


def peak_flops(device: torch.device, override: Optional[float]) -> Optional[float]:
    if override:
        return override * 1e12
    name = torch.cuda.get_device_name(device)
    for fragment, tflops in PEAK_TFLOPS.items():
        if fragment in name:
            return tflops * 1e12
    return None


def speech_frames(model: WavLLMModel, net_input) -> Tuple[int, int, int]:
    """(prompt positions of the first row, Whisper frames per row, WavLM frames per row)."""
    with torch.no_grad():
        out = model.encoder(**net_input)
        w_hidden, _ = model.encoder.encode_whisper(net_input["waves"], net_input["wave_lengths"], None)
        _, wavlm_lengths, _ = model.encoder.wavlm(net_input["waves"], net_input["wave_lengths"])
    windows = max(1, -(-int(net_input["wave_lengths"][0]) // (30 * SAMPLE_RATE)))
    whisper_frames = w_hidden.shape[1] if not model.encoder.pad_to_30s else 1500 * windows
    return int(out["prompt_lengths"][0][0]), whisper_frames, int(wavlm_lengths[0])


def fmt_components(components: Dict[str, float], total: float) -> str:
    order = ["Whisper", "WavLM", "adapters", "prompt-aware LoRA weight", "prompt assembly", "LLM blocks",
             "output layer", "decoder glue", "loss", "backward + optimiser", "KV-cache reorder",
             "generator bookkeeping"]
    parts = [f"{k} {100 * components[k] / total:.0f}%" for k in order if components.get(k, 0) > 0]
    other = total - sum(components.values())
    return ", ".join(parts + [f"other (fairseq model glue, timers) {100 * other / total:.0f}%"])


def run(sizes: List[str], clips: List[float], batches: List[int], beams: List[int], repeats: int, device,
        dtype, peak: Optional[float], skip: set) -> None:
    for name in sizes:
        size = SIZES[name]
        print(f"\n## {name}\n")
        print("| clip s | batch | train ex/s | train step s | padded to 30 s: step s | padding share "
              "| cache hit: step s | saved by the cache | first-epoch write cost | peak GiB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        details = []

        def detail(line: str) -> None:  # also at once on stderr: a long run stopped early keeps what it measured
            details.append(line)
            print(line, file=sys.stderr, flush=True)
        for clip in clips:
            for batch in batches:
                print(f"  {name} clip {clip} s batch {batch} ...", file=sys.stderr, flush=True)
                trained = measure_training(size, clip, batch, repeats, device, dtype, skip)
                unpadded, padded = trained.unpadded, trained.padded
                cells = [f"{clip:g}", str(batch), f"{batch / unpadded.seconds:.2f}", f"{unpadded.seconds:.3f}"]
                if padded:
                    share = max(0.0, padded.seconds - unpadded.seconds) / padded.seconds
                    cells += [f"{padded.seconds:.3f}", f"{100 * share:.0f}%"]
                else:
                    cells += ["-", "-"]
                if trained.cache_hit is not None:
                    without, first, hit = unpadded.seconds, trained.cache_first, trained.cache_hit
                    cells += [f"{hit:.3f}", f"{100 * (without - hit) / without:.0f}%",
                              f"{100 * (first - without) / without:+.0f}%"]
                else:
                    cells += ["-", "-", "-"]
                cells.append(f"{unpadded.peak_gib:.2f}" if unpadded.peak_gib is not None else "-")
                print("| " + " | ".join(cells) + " |", flush=True)
                detail(f"- training, clip {clip:g} s, batch {batch}, unpadded: "
                               + fmt_components(unpadded.components, unpadded.seconds))
                if padded:
                    detail(f"- training, clip {clip:g} s, batch {batch}, padded to 30 s: "
                                   + fmt_components(padded.components, padded.seconds))
                if device.type == "cuda":
                    model = build(size, False, None, device, dtype)
                    net_input, _, _ = make_batch(size, clip, batch, device, dtype)
                    prompt_len, w_frames, l_frames = speech_frames(model, net_input)
                    flops = training_flops(model, batch, prompt_len, size.answer_tokens, w_frames, l_frames)
                    del model
                    mfu = f", MFU {100 * flops / unpadded.seconds / peak:.1f}%" if peak else ""
                    detail(f"- training, clip {clip:g} s, batch {batch}: {flops / 1e12:.2f} model TFLOPs "
                                   f"per step, {flops / unpadded.seconds / 1e12:.1f} TFLOP/s{mfu}")
                for beam in beams:
                    decoded = measure_decoding(size, clip, batch, beam, repeats, device, dtype)
                    tokens_per_s = batch * size.answer_tokens / decoded.seconds
                    detail(f"- decoding, clip {clip:g} s, batch {batch}, beam {beam}: {tokens_per_s:.1f} "
                                   f"new tokens/s ({decoded.seconds:.3f} s per batch): "
                                   + fmt_components(decoded.components, decoded.seconds))
        print("\n" + "\n".join(details), flush=True)


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["demo", "small"])
    parser.add_argument("--clips", nargs="+", type=float, default=[5, 15, 30, 60], help="clip lengths, seconds")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4], help="examples per step")
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["pad", "cache"],
                        help="leave out the padded-to-30-s or the cache measurements")
    parser.add_argument("--quick", action="store_true",
                        help="demo size, clips 5 and 30 s, batch 1 and 2, 1 repeat")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the machine is shared)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense peak in TFLOP/s for the utilisation (default: by its name)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.clips, args.batches, args.repeats = ["demo"], [5, 30], [1, 2], 1
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    peak = peak_flops(device, args.peak_tflops) if device.type == "cuda" else None
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {args.dtype}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    start = time.perf_counter()
    run(args.sizes, args.clips, args.batches, args.beams, args.repeats, device, dtype, peak, set(args.skip))
    print(f"\n{time.perf_counter() - start:.0f} s; load average at the end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
