"""Loads LLaMA-family weights from local Meta, Hugging Face and GGUF checkpoints.

Every format is turned into our (Meta) parameter names with one key map per foreign format,
below. The model is built on the meta device and each tensor is assigned as it is read, so a
load needs about one model size of memory: Meta shards are memory-mapped and concatenated key
by key, safetensors are read tensor by tensor, GGUF tensors are dequantized one at a time.

Conventions per format:
- Meta (``params.json`` + ``consolidated.NN.pth``): model-parallel shards; column-parallel
  weights (wq, wk, wv, w1, w3, output) are split along dim 0, row-parallel ones (wo, w2) and
  the token embedding along dim 1, norms are replicated. ``vocab_size: -1`` and the FFN width
  are read from the tensors.
- Hugging Face (``config.json`` + safetensors, sharded safetensors or ``pytorch_model.bin``):
  its converter permutes wq / wk rows for the rotate-half rotary convention; we undo it.
- GGUF (llama.cpp): q / k already in Meta's pair order; quantized tensors are dequantized to
  float; no ``output.weight`` means tied embeddings. A ``rope_freqs.weight`` tensor (Llama-3.1+)
  holds per-frequency divisors; it is matched to Llama-3.1 scaling parameters.
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import replace
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from ..common.checkpoint_errors import CheckpointError
from ..common.checkpoint_files import HF_WEIGHT_FILES, hugging_face_weight_files, is_hugging_face_folder, load_torch_file
from ..common.gguf_metadata import read_gguf_metadata
from .config import ROPE_SCALING_KEYS, LlamaConfig, LoraConfig
from .lora import LoraLinear
from .model import LlamaModel, rope_inverse_frequencies

META, HUGGING_FACE, GGUF = "meta", "huggingface", "gguf"


# Per-block parameters: (our name, Hugging Face name, GGUF name, Meta shard concat dim or None if replicated).
_BLOCK_KEYS: List[Tuple[str, str, str, Optional[int]]] = [
    ("attention.wq.weight", "self_attn.q_proj.weight", "attn_q.weight", 0),
    ("attention.wk.weight", "self_attn.k_proj.weight", "attn_k.weight", 0),
    ("attention.wv.weight", "self_attn.v_proj.weight", "attn_v.weight", 0),
    ("attention.wo.weight", "self_attn.o_proj.weight", "attn_output.weight", 1),
    ("feed_forward.w1.weight", "mlp.gate_proj.weight", "ffn_gate.weight", 0),
    ("feed_forward.w3.weight", "mlp.up_proj.weight", "ffn_up.weight", 0),
    ("feed_forward.w2.weight", "mlp.down_proj.weight", "ffn_down.weight", 1),
    ("attention_norm.weight", "input_layernorm.weight", "attn_norm.weight", None),
    ("ffn_norm.weight", "post_attention_layernorm.weight", "ffn_norm.weight", None),
]
# Model-level parameters, same columns.
_TOP_KEYS: List[Tuple[str, str, str, Optional[int]]] = [
    ("tok_embeddings.weight", "model.embed_tokens.weight", "token_embd.weight", 1),
    ("norm.weight", "model.norm.weight", "output_norm.weight", None),
    ("output.weight", "lm_head.weight", "output.weight", 0),
]
# Stored by some exporters, recomputed by us.
_IGNORED = re.compile(r"(^|\.)(rotary_emb\.inv_freq|rope\.freqs)$")

# Llama-3.1's scaling beside the factor, which GGUF files do not store (rope_freqs only).
_LLAMA31_ROPE = dict(low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)


def _key_map(cfg: LlamaConfig, column: int) -> Dict[str, Tuple[str, Optional[int]]]:
    """Foreign name (column 1: Hugging Face, 2: GGUF, 0: Meta) -> (our name, Meta concat dim)."""
    prefix = {0: "layers.{}.", 1: "model.layers.{}.", 2: "blk.{}."}[column]
    out = {}
    for i in range(cfg.n_layers):
        for row in _BLOCK_KEYS:
            out[prefix.format(i) + row[column]] = ("layers.{}.".format(i) + row[0], row[3])
    for row in _TOP_KEYS:
        out[row[column]] = (row[0], row[3])
    return out


def detect_format(path: str) -> str:
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return GGUF
        raise CheckpointError(path, "a single file must be GGUF (it does not start with the GGUF magic)")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "params.json")) and _meta_shards(path):
            return META
        if is_hugging_face_folder(path):
            return HUGGING_FACE
        raise CheckpointError(path, "folder is neither Meta (params.json + consolidated.*.pth) nor Hugging Face "
                                    f"(config.json + one of {', '.join(HF_WEIGHT_FILES)})")
    raise CheckpointError(path, "no such file or folder")


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(path, f"unreadable JSON: {e}") from e


def _require(path: str, meta: dict, key: str):
    if key not in meta:
        raise CheckpointError(path, "missing setting", key=key)
    return meta[key]


# ---------------------------------------------------------------- Meta

def _meta_shards(path: str) -> List[str]:
    return sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))


def _meta_config(path: str) -> Tuple[LlamaConfig, List[Dict[str, Tensor]]]:
    params_path = os.path.join(path, "params.json")
    params = _read_json(params_path)
    shards = _meta_shards(path)
    states = [load_torch_file(s, mmap=True) for s in shards]  # memory-mapped: no tensor data is read yet
    first = states[0]
    for key in ("tok_embeddings.weight", "layers.0.feed_forward.w1.weight"):
        if key not in first:
            raise CheckpointError(shards[0], "missing tensor", key=key)
    vocab = params.get("vocab_size", -1)
    if vocab is None or vocab < 0:
        vocab = first["tok_embeddings.weight"].shape[0]
    scaled = bool(params.get("use_scaled_rope", False))
    theta = float(params.get("rope_theta", 10000.0))
    rope_scaling = dict(factor=float(params.get("rope_scaling_factor", 8.0)), **_LLAMA31_ROPE) if scaled else None
    n_heads = _require(params_path, params, "n_heads")
    cfg = LlamaConfig(
        dim=_require(params_path, params, "dim"), n_layers=_require(params_path, params, "n_layers"),
        n_heads=n_heads, n_kv_heads=params.get("n_kv_heads") or n_heads, vocab_size=int(vocab),
        ffn_dim=first["layers.0.feed_forward.w1.weight"].shape[0] * len(shards),
        norm_eps=float(params.get("norm_eps", 1e-5)), rope_theta=theta, rope_scaling=rope_scaling,
        tie_embeddings="output.weight" not in first,
        # params.json rarely says; the published context lengths of each generation.
        max_seq_len=int(params.get("max_seq_len", 131072 if scaled else 8192 if theta >= 500000 else 4096)),
    )
    return cfg, states


def _meta_tensors(path: str, cfg: LlamaConfig, states, expected) -> Iterator[Tuple[str, Tensor, str, str]]:
    shards = _meta_shards(path)
    names = _key_map(cfg, 0)
    for key in states[0]:
        if _IGNORED.search(key):
            continue
        if key not in names:
            raise CheckpointError(shards[0], "unexpected tensor", key=key, got_shape=states[0][key].shape)
        ours, dim = names[key]
        for shard, state in zip(shards, states):
            if key not in state:
                raise CheckpointError(shard, "missing tensor (present in the first shard)", key=key)
        if dim is None or len(states) == 1:
            tensor = states[0][key]
        else:
            tensor = torch.cat([state[key] for state in states], dim=dim)
        yield ours, tensor, shards[0] if len(shards) == 1 else path, key


# ---------------------------------------------------------------- Hugging Face

def _hf_config(path: str) -> Tuple[LlamaConfig, None]:
    config_path = os.path.join(path, "config.json")
    c = _read_json(config_path)
    if c.get("model_type", "llama") != "llama":
        raise CheckpointError(config_path, f"model_type {c.get('model_type')!r} is not a LLaMA-family model")
    # transformers 5 moved rope settings into rope_parameters; older configs have rope_theta / rope_scaling.
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = float(c.get("rope_theta", rope.get("rope_theta", 10000.0)))
    if rope_type not in ("default", "llama3"):
        raise CheckpointError(config_path, f"rope type {rope_type!r} is not supported (only default and llama3)")
    n_heads = _require(config_path, c, "num_attention_heads")
    dim = _require(config_path, c, "hidden_size")
    if c.get("head_dim") not in (None, dim // n_heads):
        raise CheckpointError(config_path, f"head_dim {c['head_dim']} differs from hidden_size / heads")
    if c.get("hidden_act", "silu") != "silu":
        raise CheckpointError(config_path, f"activation {c['hidden_act']!r} is not SwiGLU's silu", key="hidden_act")
    if c.get("attention_bias") or c.get("mlp_bias"):
        raise CheckpointError(config_path, "projections with biases are not supported")
    return LlamaConfig(
        dim=dim, n_layers=_require(config_path, c, "num_hidden_layers"), n_heads=n_heads,
        n_kv_heads=c.get("num_key_value_heads") or n_heads, vocab_size=_require(config_path, c, "vocab_size"),
        ffn_dim=_require(config_path, c, "intermediate_size"), norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=None if rope_type == "default" else {k: _require(config_path, rope, k) for k in ROPE_SCALING_KEYS},
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        max_seq_len=int(c.get("max_position_embeddings", 4096)),
    ), None


def _read_file_lazily(file: str) -> Iterator[Tuple[str, Callable[[], Tensor], Tuple[int, ...]]]:
    """(name, loader, shape) of each tensor in a safetensors or PyTorch file, reading on demand."""
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    shape = tuple(f.get_slice(key).get_shape())
                    yield key, (lambda f=f, key=key: f.get_tensor(key)), shape
        except Exception as e:  # SafetensorError for truncated / damaged headers or data
            raise CheckpointError(
                file, f"unreadable safetensors file, truncated or damaged ({type(e).__name__}: {e})") from e
    else:
        state = load_torch_file(file, mmap=True)
        for key, tensor in state.items():
            yield key, (lambda t=tensor: t), tuple(tensor.shape)


def _unpermute_rotary(w: Tensor, n_heads: int) -> Tensor:
    """Hugging Face's rotate-half row order (per head: even features, then odd) -> Meta's pairs."""
    out_dim, in_dim = w.shape
    return w.view(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _hf_tensors(path: str, cfg: LlamaConfig, _, expected) -> Iterator[Tuple[str, Tensor, str, str]]:
    names = _key_map(cfg, 1)
    heads = {"attention.wq.weight": cfg.n_heads, "attention.wk.weight": cfg.n_kv_heads}
    for file in hugging_face_weight_files(path):
        for key, load, shape in _read_file_lazily(file):
            if _IGNORED.search(key) or (key == "lm_head.weight" and cfg.tie_embeddings):
                continue
            if key not in names:
                raise CheckpointError(file, "unexpected tensor", key=key, got_shape=shape)
            ours = names[key][0]
            if ours in expected and shape != expected[ours]:
                raise CheckpointError(file, f"wrong shape for {ours}", key=key,
                                      expected_shape=expected[ours], got_shape=shape)
            try:
                tensor = load()
            except Exception as e:
                raise CheckpointError(file, f"unreadable tensor ({type(e).__name__}: {e})", key=key) from e
            suffix = ours.split(".", 2)[-1]
            if suffix in heads:
                tensor = _unpermute_rotary(tensor, heads[suffix])
            yield ours, tensor, file, key


# ---------------------------------------------------------------- GGUF

def _gguf_reader(path: str):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # truncated or damaged files fail while mapping the header / tensor table
        raise CheckpointError(path, f"unreadable GGUF file, truncated or damaged ({type(e).__name__}: {e})") from e


def _gguf_field(path: str, meta: dict, key: str, default=None):
    if key not in meta:
        if default is None:
            raise CheckpointError(path, "missing metadata", key=key)
        return default
    return meta[key]


def _gguf_rope_scaling(path: str, cfg: LlamaConfig, divisors: Tensor) -> dict:
    """Llama-3.1 scaling parameters that reproduce a ``rope_freqs`` tensor (divisors of each frequency)."""
    scaling = dict(factor=float(divisors.max()), **_LLAMA31_ROPE)
    plain = rope_inverse_frequencies(cfg)
    trial = replace(cfg, rope_scaling=scaling)
    if divisors.shape != plain.shape or not torch.allclose(plain / rope_inverse_frequencies(trial), divisors,
                                                           rtol=1e-3):
        raise CheckpointError(path, "rope_freqs does not match Llama-3.1 frequency scaling", key="rope_freqs.weight")
    return scaling


def _gguf_dequantize(path: str, tensor) -> Tensor:
    import gguf
    import numpy as np

    try:
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except Exception as e:
        raise CheckpointError(path, f"cannot dequantize {tensor.tensor_type.name} ({e})", key=tensor.name) from e
    return torch.from_numpy(np.array(array, dtype=np.float32))  # copy: the file mapping is read-only


def _gguf_config(path: str):
    meta = read_gguf_metadata(path, ("general.", "llama."))
    arch = _gguf_field(path, meta, "general.architecture")
    if arch != "llama":
        raise CheckpointError(path, f"GGUF architecture {arch!r} is not llama", key="general.architecture")
    reader = _gguf_reader(path)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise CheckpointError(path, "missing tensor", key="token_embd.weight")
    n_heads = int(_gguf_field(path, meta, "llama.attention.head_count"))
    cfg = LlamaConfig(
        dim=int(_gguf_field(path, meta, "llama.embedding_length")),
        n_layers=int(_gguf_field(path, meta, "llama.block_count")),
        n_heads=n_heads, n_kv_heads=int(_gguf_field(path, meta, "llama.attention.head_count_kv", n_heads)),
        # ggml shapes are innermost-first: (dim, vocab)
        vocab_size=int(tensors["token_embd.weight"].shape[1]),
        ffn_dim=int(_gguf_field(path, meta, "llama.feed_forward_length")),
        norm_eps=float(_gguf_field(path, meta, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_gguf_field(path, meta, "llama.rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in tensors,
        max_seq_len=int(_gguf_field(path, meta, "llama.context_length", 4096)),
    )
    rotated = int(_gguf_field(path, meta, "llama.rope.dimension_count", cfg.head_dim))
    if rotated != cfg.head_dim:
        raise CheckpointError(path, f"rotary positions on {rotated} of {cfg.head_dim} head features are not supported",
                              key="llama.rope.dimension_count")
    rope_type = _gguf_field(path, meta, "llama.rope.scaling.type", "none")
    if rope_type != "none":
        raise CheckpointError(path, f"rope scaling {rope_type!r} is not supported", key="llama.rope.scaling.type")
    if "rope_freqs.weight" in tensors:
        cfg.rope_scaling = _gguf_rope_scaling(path, cfg, _gguf_dequantize(path, tensors["rope_freqs.weight"]))
    return cfg, reader


def _gguf_tensors(path: str, cfg: LlamaConfig, reader, expected) -> Iterator[Tuple[str, Tensor, str, str]]:
    names = _key_map(cfg, 2)
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            continue  # turned into cfg.rope_scaling
        if t.name not in names:
            raise CheckpointError(path, "unexpected tensor", key=t.name, got_shape=tuple(reversed(t.shape.tolist())))
        yield names[t.name][0], _gguf_dequantize(path, t), path, t.name


# ---------------------------------------------------------------- entry points

# format -> (config reader returning (config, the opened file(s) or None), tensor iterator)
_FORMATS = {META: (_meta_config, _meta_tensors), HUGGING_FACE: (_hf_config, _hf_tensors),
            GGUF: (_gguf_config, _gguf_tensors)}


def read_llama_config(path: str) -> LlamaConfig:
    """The model shape stored with a Meta folder, Hugging Face folder or GGUF file."""
    return _FORMATS[detect_format(path)][0](path)[0]


def load_llama(path: str, lora: Optional[LoraConfig] = None, device="cpu",
               dtype: torch.dtype = torch.float32) -> LlamaModel:
    """A :class:`LlamaModel` with the checkpoint's weights (frozen) and freshly initialised LoRA."""
    read_config, read_tensors = _FORMATS[detect_format(path)]
    cfg, opened = read_config(path)  # the opened file(s), so the tensors need not open them again
    with torch.device("meta"):
        model = LlamaModel(cfg, lora)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if not k.endswith((".lora_A", ".lora_B")) and not (cfg.tie_embeddings and k == "output.weight")}
    state: Dict[str, Tensor] = {}
    for ours, tensor, file, key in read_tensors(path, cfg, opened, expected):
        if ours not in expected:
            raise CheckpointError(file, f"tensor not used by a tied-embedding model ({ours})", key=key)
        if tuple(tensor.shape) != expected[ours]:
            raise CheckpointError(file, f"wrong shape for {ours}", key=key,
                                  expected_shape=expected[ours], got_shape=tuple(tensor.shape))
        if ours in state:
            raise CheckpointError(file, f"{ours} given twice", key=key)
        state[ours] = tensor.to(device=device, dtype=dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(path, f"missing tensors ({len(missing)}, in our names)", key=missing[0])
    model.load_state_dict(state, strict=False, assign=True)
    for layer in model.modules():
        if isinstance(layer, LoraLinear):
            layer.materialize_lora(device, dtype)
    model.tie_weights()
    return model


def save_llama_meta(model: LlamaModel, folder: str) -> None:
    """Writes the base weights (LoRA merged in if it is, never as separate tensors) in Meta's
    format: ``params.json`` + ``consolidated.00.pth``, which :func:`load_llama` reads back."""
    cfg = model.cfg
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" not in k}
    if cfg.tie_embeddings:
        state.pop("output.weight", None)
    params = dict(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                  vocab_size=cfg.vocab_size, norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                  max_seq_len=cfg.max_seq_len)
    if cfg.rope_scaling:
        params.update(use_scaled_rope=True, rope_scaling_factor=cfg.rope_scaling["factor"])
    torch.save(state, os.path.join(folder, "consolidated.00.pth"))
    with open(os.path.join(folder, "params.json"), "w", encoding="utf-8") as f:
        json.dump(params, f, indent=1)
