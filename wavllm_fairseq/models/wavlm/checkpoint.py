"""Loads a WavLM encoder from the authors' ``.pt`` (cfg + model) or a Hugging Face folder.

Each format has one key table below, (checkpoint name, our name) prefix pairs where ``{n}`` stands
for a layer number; the same table renames in both directions. Only local paths are read.

The positional convolution is stored with weight norm (``weight_g``, ``weight_v``: the authors'
code and old transformers; ``parametrizations.weight.original0/1``: new transformers) or as a
plain weight; we keep the resolved weight ``g * v / ||v||`` (norm over all dims but the kernel's).
"""
from __future__ import annotations

import ast
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..common.checkpoint_errors import CheckpointError
from ..common.checkpoint_files import load_torch_file, read_hugging_face_tensors
from .config import WavLMConfig
from .model import WavLMEncoder

KeyTable = List[Tuple[str, str]]

def authors_keys(extractor_mode: str) -> KeyTable:
    """The authors' names (nn.Sequential indices: conv, dropout, norm, GELU) for this extractor mode."""
    norm = "2.1." if extractor_mode == "layer_norm" else "2."  # layer norm sits inside a transpose Sequential
    return [
        ("feature_extractor.conv_layers.{n}.0.", "feature_extractor.conv_layers.{n}.conv."),
        ("feature_extractor.conv_layers.{n}." + norm, "feature_extractor.conv_layers.{n}.norm."),
        ("layer_norm.", "layer_norm."),
        ("post_extract_proj.", "post_extract_proj."),
        ("encoder.pos_conv.0.", "encoder.pos_conv.conv."),
        ("encoder.layer_norm.", "encoder.layer_norm."),
        ("encoder.layers.{n}.self_attn.grep_linear.", "encoder.layers.{n}.self_attn.gate_linear."),
        ("encoder.layers.{n}.self_attn.grep_a", "encoder.layers.{n}.self_attn.gate_const"),
        ("encoder.layers.{n}.", "encoder.layers.{n}."),
    ]


HUGGING_FACE_KEYS: KeyTable = [
    ("feature_extractor.conv_layers.{n}.conv.", "feature_extractor.conv_layers.{n}.conv."),
    ("feature_extractor.conv_layers.{n}.layer_norm.", "feature_extractor.conv_layers.{n}.norm."),
    ("feature_projection.layer_norm.", "layer_norm."),
    ("feature_projection.projection.", "post_extract_proj."),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", "encoder.pos_conv.conv.weight_g"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", "encoder.pos_conv.conv.weight_v"),
    ("encoder.pos_conv_embed.conv.", "encoder.pos_conv.conv."),
    ("encoder.layer_norm.", "encoder.layer_norm."),
    ("encoder.layers.{n}.attention.gru_rel_pos_linear.", "encoder.layers.{n}.self_attn.gate_linear."),
    ("encoder.layers.{n}.attention.gru_rel_pos_const", "encoder.layers.{n}.self_attn.gate_const"),
    ("encoder.layers.{n}.attention.rel_attn_embed.", "encoder.layers.{n}.self_attn.relative_attention_bias."),
    ("encoder.layers.{n}.attention.", "encoder.layers.{n}.self_attn."),
    ("encoder.layers.{n}.layer_norm.", "encoder.layers.{n}.self_attn_layer_norm."),
    ("encoder.layers.{n}.feed_forward.intermediate_dense.", "encoder.layers.{n}.fc1."),
    ("encoder.layers.{n}.feed_forward.output_dense.", "encoder.layers.{n}.fc2."),
    ("encoder.layers.{n}.final_layer_norm.", "encoder.layers.{n}.final_layer_norm."),
]

# Pre-training parameters no hidden state uses (mask embeddings for masked prediction).
_TRAINING_ONLY = {"mask_emb", "masked_spec_embed"}
# Pre-norm models apply the encoder's last norm after every hidden state we return.
_FINAL_NORM = {"encoder.layer_norm.weight", "encoder.layer_norm.bias"}
_POS_CONV = "encoder.pos_conv.conv."

# The authors' WavLMConfig defaults for fields that older cfg dicts may leave out.
_AUTHORS_CFG_DEFAULTS = {"conv_bias": False, "conv_pos": 128, "conv_pos_groups": 16,
                         "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280,
                         "gru_rel_pos": False, "normalize": False, "activation_fn": "gelu"}


def _prefix_regex(template: str) -> str:
    return "^" + re.escape(template).replace(re.escape("{n}"), r"(?P<n>\d+)")


def rename_key(name: str, table: KeyTable, to_ours: bool = True) -> Optional[str]:
    """Renames one key from the checkpoint's names to ours (or back); None if no row matches."""
    for theirs, ours in table:
        source, target = (theirs, ours) if to_ours else (ours, theirs)
        match = re.match(_prefix_regex(source), name)
        if match:
            number = match.groupdict().get("n")
            return target.replace("{n}", number or "") + name[match.end():]
    return None


def _parse_conv_layers(text: str, path: str) -> List[Tuple[int, int, int]]:
    """Evaluates the authors' ``conv_feature_layers`` string, e.g. "[(512,10,5)] + [(512,3,2)] * 4",
    allowing only int/list/tuple literals, + and *: never ``eval``."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported expression {ast.dump(node)}")

    try:
        layers = value(ast.parse(text, mode="eval").body)
        if not all(isinstance(layer, tuple) and len(layer) == 3 for layer in layers):
            raise ValueError("expected a list of (dim, kernel, stride)")
        return layers
    except (SyntaxError, ValueError, TypeError) as error:
        raise CheckpointError(path, f"cannot parse conv_feature_layers {text!r}: {error}",
                              key="cfg.conv_feature_layers") from error


def _authors_config(cfg: Mapping, path: str) -> WavLMConfig:
    def get(name: str) -> Any:
        if name in cfg:
            return cfg[name]
        if name in _AUTHORS_CFG_DEFAULTS:
            return _AUTHORS_CFG_DEFAULTS[name]
        raise CheckpointError(path, "cfg lacks a model size field", key=f"cfg.{name}")

    if get("activation_fn") != "gelu":
        raise CheckpointError(path, f"unsupported activation {get('activation_fn')!r}", key="cfg.activation_fn")
    layers = get("conv_feature_layers")
    layers = _parse_conv_layers(layers, path) if isinstance(layers, str) else [tuple(layer) for layer in layers]
    return WavLMConfig(
        conv_feature_layers=layers,
        extractor_mode=str(get("extractor_mode")), conv_bias=bool(get("conv_bias")),
        encoder_layers=int(get("encoder_layers")), encoder_embed_dim=int(get("encoder_embed_dim")),
        encoder_ffn_embed_dim=int(get("encoder_ffn_embed_dim")),
        encoder_attention_heads=int(get("encoder_attention_heads")),
        conv_pos=int(get("conv_pos")), conv_pos_groups=int(get("conv_pos_groups")),
        relative_position_embedding=bool(get("relative_position_embedding")),
        num_buckets=int(get("num_buckets")), max_distance=int(get("max_distance")),
        gru_rel_pos=bool(get("gru_rel_pos")), layer_norm_first=bool(get("layer_norm_first")),
        normalize_waveform=bool(get("normalize")),
        feature_projection=layers[-1][0] != int(get("encoder_embed_dim")),
    )


def _read_authors(path: str) -> Tuple[WavLMConfig, Dict[str, Tensor], str, KeyTable]:
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or "cfg" not in checkpoint or "model" not in checkpoint:
        raise CheckpointError(path, "not a WavLM checkpoint of the authors' format (needs 'cfg' and 'model')")
    cfg = _authors_config(checkpoint["cfg"], path)
    return cfg, checkpoint["model"], path, authors_keys(cfg.extractor_mode)


def _hugging_face_config(path: str) -> WavLMConfig:
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            hf = json.load(f)
        for name in ("hidden_act", "feat_extract_activation"):
            if hf.get(name, "gelu") != "gelu":
                raise CheckpointError(config_path, f"unsupported activation {hf[name]!r}", key=name)
        if hf.get("add_adapter"):
            raise CheckpointError(config_path, "WavLM with an output adapter is not supported", key="add_adapter")
        cfg = WavLMConfig(
            conv_feature_layers=list(zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])),
            extractor_mode={"group": "default", "layer": "layer_norm"}[hf["feat_extract_norm"]],
            conv_bias=hf["conv_bias"], encoder_layers=hf["num_hidden_layers"], encoder_embed_dim=hf["hidden_size"],
            encoder_ffn_embed_dim=hf["intermediate_size"], encoder_attention_heads=hf["num_attention_heads"],
            conv_pos=hf["num_conv_pos_embeddings"], conv_pos_groups=hf["num_conv_pos_embedding_groups"],
            # transformers' WavLM always has the gated relative position bias
            relative_position_embedding=True, gru_rel_pos=True,
            num_buckets=hf["num_buckets"], max_distance=hf["max_bucket_distance"],
            layer_norm_first=hf["do_stable_layer_norm"], layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        )
    except KeyError as error:
        raise CheckpointError(config_path, "config lacks a model size field", key=error.args[0]) from error
    except (OSError, ValueError) as error:
        raise CheckpointError(config_path, f"cannot read: {error}") from error
    # The wave normalisation lives in the feature extractor's config; without one, layer-norm
    # extractors (Large) were trained on normalised waves and group-norm ones (Base, Base+) were not.
    cfg.normalize_waveform = cfg.extractor_mode == "layer_norm"
    preprocessor = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(preprocessor):
        try:
            with open(preprocessor) as f:
                cfg.normalize_waveform = bool(json.load(f).get("do_normalize", cfg.normalize_waveform))
        except (OSError, ValueError) as error:
            raise CheckpointError(preprocessor, f"cannot read: {error}") from error
    return cfg


def _read_hugging_face(path: str) -> Tuple[WavLMConfig, Dict[str, Tensor], str, KeyTable]:
    cfg = _hugging_face_config(path)
    tensors, weights = read_hugging_face_tensors(path)
    # task models (WavLMForCTC, ...) keep the encoder under "wavlm." next to their heads
    if any(key.startswith("wavlm.") for key in tensors):
        tensors = {key[len("wavlm."):]: value for key, value in tensors.items() if key.startswith("wavlm.")}
    return cfg, tensors, weights, HUGGING_FACE_KEYS


def detect_format(path: str) -> str:
    """``authors`` for a file, ``huggingface`` for a folder."""
    if os.path.isfile(path):
        return "authors"
    if os.path.isdir(path):
        return "huggingface"
    raise CheckpointError(path, "no such file or folder")


def to_our_names(state: Mapping[str, Tensor], table: KeyTable, cfg: WavLMConfig, source: str,
                 prefix: str = "") -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """(weights under our names, our name -> checkpoint name); unused weights dropped, unknown ones refused.
    ``prefix``: what the checkpoint puts before these names, for naming keys in errors."""
    ours: Dict[str, Tensor] = {}
    names: Dict[str, str] = {}
    for key, value in state.items():
        if key in _TRAINING_ONLY or (cfg.layer_norm_first and key in _FINAL_NORM):
            continue
        renamed = rename_key(key, table)
        if renamed is None:
            raise CheckpointError(source, "unexpected weight (not part of the WavLM encoder)", key=prefix + key,
                                  got_shape=tuple(value.shape))
        ours[renamed], names[renamed] = value, prefix + key
    g, v = _POS_CONV + "weight_g", _POS_CONV + "weight_v"
    if g in ours and v in ours:
        expected_g = (1, 1, cfg.conv_pos)
        if tuple(ours[g].shape) != expected_g:
            raise CheckpointError(source, "weight-norm magnitude has the wrong shape", key=names[g],
                                  expected_shape=expected_g, got_shape=tuple(ours[g].shape))
        direction, magnitude = ours.pop(v).float(), ours.pop(g).float()
        ours[_POS_CONV + "weight"] = direction * (magnitude / direction.norm(dim=(0, 1), keepdim=True))
        names[_POS_CONV + "weight"] = names.pop(v)
    return ours, names


def load_wavlm(path: str, device="cpu", dtype: torch.dtype = torch.float32) -> WavLMEncoder:
    """Builds a WavLMEncoder from the authors' ``.pt`` file or a Hugging Face folder (eval mode).

    Raises CheckpointError naming the file, the key (in the checkpoint's own names) and the
    shapes for unreadable files and for missing, unexpected or misshapen weights.
    """
    reader = _read_authors if detect_format(path) == "authors" else _read_hugging_face
    cfg, state, source, table = reader(path)
    ours, names = to_our_names(state, table, cfg, source)
    model = WavLMEncoder(cfg)
    for key, param in model.state_dict().items():
        if key not in ours:
            raise CheckpointError(source, f"missing weight (our name {key!r})",
                                  key=rename_key(key, table, to_ours=False) or key, expected_shape=tuple(param.shape))
        if ours[key].shape != param.shape:
            raise CheckpointError(source, "weight has the wrong shape", key=names[key],
                                  expected_shape=tuple(param.shape), got_shape=tuple(ours[key].shape))
    extra = sorted(set(ours) - set(model.state_dict()))
    if extra:
        raise CheckpointError(source, f"{len(extra)} unexpected weights for this config", key=names[extra[0]])
    model.load_state_dict({k: v.float() for k, v in ours.items()})
    return model.to(device=device, dtype=dtype).eval()
