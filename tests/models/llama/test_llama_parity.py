"""Our decoder against transformers' LlamaForCausalLM, through every checkpoint format we read.

The reference weights come from a randomly initialised Hugging Face model (norm weights
randomised too, so every tensor's mapping matters); they are written as a Hugging Face folder,
a two-shard Meta folder and an F32 GGUF file, each converted here from the Hugging Face
layout by the rules those formats document, and all three must give transformers' logits.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig as HFConfig
from transformers import LlamaForCausalLM

from wavllm_fairseq.models.llama import LoraConfig, load_llama, read_llama_config

STYLES = {
    # LLaMA-2: multi-head attention, separate output matrix, theta 1e4.
    "llama2": dict(num_key_value_heads=4, tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5,
                   max_position_embeddings=4096),
    # Llama-3.1: grouped-query attention, tied output, theta 5e5 with frequency scaling.
    "llama3": dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0, rms_norm_eps=1e-5,
                   rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                     original_max_position_embeddings=8192),
                   max_position_embeddings=131072),
}
# Far into the sequence, where Llama-3 scaling changes the angles of the mid and low frequencies.
START = {"llama2": 0, "llama3": 3000}


def make_hf_model(style: str) -> LlamaForCausalLM:
    cfg = HFConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=200,
                   bos_token_id=None, eos_token_id=None, pad_token_id=None,
                   **STYLES[style])
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    return model


def meta_row_order(n_heads: int, out_dim: int) -> torch.Tensor:
    """For each Meta row (head h, pair i, part c at h*hd + 2i + c) its Hugging Face row (h*hd + c*hd/2 + i)."""
    hd = out_dim // n_heads
    return torch.tensor([h * hd + c * (hd // 2) + i for h in range(n_heads) for i in range(hd // 2) for c in (0, 1)])


def hf_to_meta_state(hf: LlamaForCausalLM) -> dict:
    """Meta-named tensors (GGUF uses the same layout) from a Hugging Face model."""
    c, sd = hf.config, hf.state_dict()
    out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"]}
    if not c.tie_word_embeddings:
        out["output.weight"] = sd["lm_head.weight"]
    names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
             "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.up_proj": "feed_forward.w3",
             "mlp.down_proj": "feed_forward.w2", "input_layernorm": "attention_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(c.num_hidden_layers):
        for theirs, ours in names.items():
            w = sd[f"model.layers.{i}.{theirs}.weight"]
            if theirs == "self_attn.q_proj":
                w = w[meta_row_order(c.num_attention_heads, w.shape[0])]
            if theirs == "self_attn.k_proj":
                w = w[meta_row_order(c.num_key_value_heads, w.shape[0])]
            out[f"layers.{i}.{ours}.weight"] = w.clone()
    return out


def write_hf(hf, folder) -> str:
    hf.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def write_meta(hf, folder, n_shards: int = 2) -> str:
    """consolidated.0N.pth model-parallel shards and params.json, as Meta's reference code writes them."""
    c = hf.config
    folder.mkdir()
    params = dict(dim=c.hidden_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                  n_kv_heads=c.num_key_value_heads, vocab_size=-1, multiple_of=32, norm_eps=c.rms_norm_eps,
                  rope_theta=c.rope_parameters["rope_theta"])
    if c.rope_parameters.get("rope_type") == "llama3":
        params["use_scaled_rope"] = True  # Llama-3.1's params.json: factor 8 implied
    (folder / "params.json").write_text(json.dumps(params))
    shards = [{} for _ in range(n_shards)]
    for key, w in hf_to_meta_state(hf).items():
        if w.dim() == 1:
            parts = [w] * n_shards
        elif key == "tok_embeddings.weight" or key.endswith(("wo.weight", "w2.weight")):
            parts = w.chunk(n_shards, dim=1)
        else:
            parts = w.chunk(n_shards, dim=0)
        for shard, part in zip(shards, parts):
            shard[key] = part.clone()
    for i, shard in enumerate(shards):
        shard["rope.freqs"] = torch.zeros(4)  # the reference code saves its frequency buffer; must be ignored
        torch.save(shard, folder / f"consolidated.{i:02d}.pth")
    return str(folder)


def llama_cpp_rope_factors(c) -> np.ndarray:
    """The rope_freqs tensor llama.cpp's converter writes for Llama-3.1 scaling (divisor per frequency)."""
    r = c.rope_parameters
    hd = c.hidden_size // c.num_attention_heads
    factors = []
    for i in range(0, hd, 2):
        wavelen = 2 * math.pi * r["rope_theta"] ** (i / hd)
        if wavelen < r["original_max_position_embeddings"] / r["high_freq_factor"]:
            factors.append(1.0)
        elif wavelen > r["original_max_position_embeddings"] / r["low_freq_factor"]:
            factors.append(r["factor"])
        else:
            smooth = (r["original_max_position_embeddings"] / wavelen - r["low_freq_factor"]) / (
                r["high_freq_factor"] - r["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / r["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


def write_gguf(hf, path) -> str:
    import gguf

    c = hf.config
    names = {"tok_embeddings": "token_embd", "norm": "output_norm", "output": "output", "attention.wq": "attn_q",
             "attention.wk": "attn_k", "attention.wv": "attn_v", "attention.wo": "attn_output",
             "feed_forward.w1": "ffn_gate", "feed_forward.w3": "ffn_up", "feed_forward.w2": "ffn_down",
             "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    for key, w in hf_to_meta_state(hf).items():
        parts = key.split(".")
        if parts[0] == "layers":
            name = f"blk.{parts[1]}.{names['.'.join(parts[2:-1])]}.weight"
        else:
            name = f"{names[parts[0]]}.weight"
        writer.add_tensor(name, w.numpy().astype(np.float32))
    if c.rope_parameters.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama_cpp_rope_factors(c))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


WRITERS = {"huggingface": write_hf, "meta": write_meta, "gguf": lambda hf, p: write_gguf(hf, p.with_suffix(".gguf"))}


def our_logits(model, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    positions = (torch.arange(ids.shape[1]) + start).expand_as(ids)
    with torch.no_grad():
        hidden, _ = model(model.tok_embeddings(ids), positions, None)
        return model.output_logits(hidden)


def hf_logits(hf, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    positions = (torch.arange(ids.shape[1]) + start).expand_as(ids)
    with torch.no_grad():
        return hf(input_ids=ids, position_ids=positions).logits


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_logits_match_transformers(tmp_path, style, fmt):
    hf = make_hf_model(style)
    path = WRITERS[fmt](hf, tmp_path / fmt)
    cfg = read_llama_config(path)
    assert (cfg.n_kv_heads, cfg.tie_embeddings, cfg.rope_theta) == (
        hf.config.num_key_value_heads, hf.config.tie_word_embeddings, hf.config.rope_parameters["rope_theta"])
    assert (cfg.vocab_size, cfg.ffn_dim) == (hf.config.vocab_size, hf.config.intermediate_size)
    model = load_llama(path, lora=LoraConfig(rank=4, dropout=0.0)).eval()  # LoRA B = 0: no change
    assert model.cfg.rope_scaling == ({k: v for k, v in hf.config.rope_parameters.items()
                                       if k not in ("rope_type", "rope_theta")} if style == "llama3" else None)
    assert (model.output.weight is model.tok_embeddings.weight) == hf.config.tie_word_embeddings
    ids = torch.randint(0, hf.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    ours, theirs = our_logits(model, ids, START[style]), hf_logits(hf, ids, START[style])
    assert (ours - theirs).abs().max().item() < 1e-4


def greedy(model, prompt: torch.Tensor, n_new: int) -> list:
    """Greedy decoding through our KV cache: one prefill, then one token per step."""
    positions = torch.arange(prompt.shape[1])[None]
    tokens = []
    with torch.no_grad():
        hidden, past = model(model.tok_embeddings(prompt), positions, None, use_cache=True)
        for step in range(n_new):
            tokens.append(int(model.output_logits(hidden[:, -1]).argmax(-1)))
            if step + 1 == n_new:
                break
            pos = torch.tensor([[prompt.shape[1] + step]])
            pad = torch.zeros(1, prompt.shape[1] + step + 1, dtype=torch.bool)
            hidden, past = model(model.tok_embeddings(torch.tensor([[tokens[-1]]])), pos, pad,
                                 past_key_values=past, use_cache=True)
    return tokens


@pytest.mark.parametrize("style", sorted(STYLES))
def test_greedy_decoding_matches_transformers_generate(tmp_path, style):
    hf = make_hf_model(style)
    model = load_llama(write_hf(hf, tmp_path / "hf")).eval()
    prompt = torch.randint(0, hf.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=12, do_sample=False)[0, 7:].tolist()
    assert len(expected) == 12
    assert greedy(model, prompt, 12) == expected


# ---------------------------------------------------------------- the real SmolLM2-135M GGUF (Q4_1)

@pytest.fixture(scope="module")
def smollm(smollm_gguf_path):
    return load_llama(smollm_gguf_path).eval()


def gguf_chat_ids(path: str, question: str) -> list:
    """ChatML prompt ids, encoded with the byte-level BPE vocabulary and merges stored in the GGUF."""
    import gguf
    from tokenizers import Tokenizer, models, pre_tokenizers

    fields = gguf.GGUFReader(path).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()]
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    encode = lambda text: bpe.encode(text).ids  # noqa: E731
    start, end = vocab["<|im_start|>"], vocab["<|im_end|>"]
    return ([start] + encode("user\n" + question) + [end] + encode("\n") + [start] + encode("assistant\n")), tokens


def hf_from_ours(model) -> LlamaForCausalLM:
    """transformers' Llama with our loaded weights, q / k rows put back in its rotate-half order."""
    c = model.cfg
    hf = LlamaForCausalLM(HFConfig(
        hidden_size=c.dim, intermediate_size=c.ffn_dim, num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, vocab_size=c.vocab_size, rms_norm_eps=c.norm_eps, rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_embeddings, max_position_embeddings=c.max_seq_len,
        bos_token_id=1, eos_token_id=2, pad_token_id=2)).eval()
    sd = model.state_dict()
    names = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
             "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
             "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    theirs = {"model.embed_tokens.weight": sd["tok_embeddings.weight"], "model.norm.weight": sd["norm.weight"]}
    for i in range(c.n_layers):
        for ours, name in names.items():
            w = sd[f"layers.{i}.{ours}.weight"]
            heads = {"attention.wq": c.n_heads, "attention.wk": c.n_kv_heads}.get(ours)
            if heads:
                hf_rows = torch.empty_like(w)
                hf_rows[meta_row_order(heads, w.shape[0])] = w
                w = hf_rows
            theirs[f"model.layers.{i}.{name}.weight"] = w
    missing, unexpected = hf.load_state_dict(theirs, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    return hf


def test_real_smollm2_gguf_matches_transformers_and_answers(smollm, smollm_gguf_path):
    cfg = smollm.cfg
    # The published SmolLM2-135M shape.
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.vocab_size) == (
        576, 30, 9, 3, 1536, 49152)
    assert cfg.tie_embeddings and cfg.rope_theta == 100000.0
    prompt, vocab = gguf_chat_ids(smollm_gguf_path, "What is the capital of France?")
    ids = torch.tensor([prompt])
    hf = hf_from_ours(smollm)
    ours, theirs = our_logits(smollm, ids), hf_logits(hf, ids)
    assert (ours - theirs).abs().max().item() < 1e-3 * theirs.abs().max().item()
    answer = greedy(smollm, ids, 8)
    with torch.no_grad():
        expected = hf.generate(ids, max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    assert answer == expected
    # Only a correct rotary convention and dequantization make the small model answer this.
    text = "".join(vocab[i] for i in answer).replace("\u0120", " ")
    assert "Paris" in text, text
