"""Loads a Whisper encoder from openai-whisper, Hugging Face or CTranslate2 checkpoints.

Every format is first turned into openai-whisper's own state-dict names (``encoder.conv1.weight``,
``encoder.blocks.N.attn.query.weight``, ...), which are our module names: one key map per
foreign format, below. Only local paths are read.

CTranslate2 (``config.json`` + ``model.bin``, as written by ``ct2-transformers-converter`` and
shipped by faster-whisper) is read by a small reader of its binary layout, little endian:
``uint32 binary_version``, ``string spec_name``, ``uint32 spec_revision``, ``uint32 n_vars``,
then per variable ``string name``, ``uint8 rank``, ``uint32 dims[rank]``, ``uint8 dtype``,
``uint32 n_bytes``, raw data; then ``uint32 n_aliases`` and pairs ``string alias, string target``.
A string is ``uint16 length`` (NUL included) and the bytes. Quantized weights (int8 / int16)
come with a float ``<name>_scale`` per output row; the value is ``q / scale``. CTranslate2 fuses
the self-attention q, k, v projections (and the cross-attention k, v) into one linear layer.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..common.checkpoint_errors import CheckpointError
from ..common.checkpoint_files import HF_WEIGHT_FILES, is_hugging_face_folder, load_torch_file, read_hugging_face_tensors
from .config import WhisperEncoderConfig
from .model import WhisperEncoder

OPENAI, HUGGING_FACE, CTRANSLATE2 = "openai", "huggingface", "ctranslate2"


# Hugging Face (after its "model." / no prefix) -> openai-whisper names.
_HF_TO_OPENAI: List[Tuple[str, str]] = [
    (r"encoder\.embed_positions\.weight", r"encoder.positional_embedding"),
    (r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.", r"encoder.blocks.\1.attn.query."),
    (r"encoder\.layers\.(\d+)\.self_attn\.k_proj\.", r"encoder.blocks.\1.attn.key."),
    (r"encoder\.layers\.(\d+)\.self_attn\.v_proj\.", r"encoder.blocks.\1.attn.value."),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"encoder.blocks.\1.attn.out."),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.blocks.\1.attn_ln."),
    (r"encoder\.layers\.(\d+)\.fc1\.", r"encoder.blocks.\1.mlp.0."),
    (r"encoder\.layers\.(\d+)\.fc2\.", r"encoder.blocks.\1.mlp.2."),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.blocks.\1.mlp_ln."),
    (r"encoder\.layer_norm\.", r"encoder.ln_post."),
    (r"encoder\.(conv[12])\.", r"encoder.\1."),
]

# CTranslate2 module -> openai-whisper module(s); several targets: a fused layer split in equal rows.
_CT2_TO_OPENAI: List[Tuple[str, List[str]]] = [
    (r"(encoder|decoder)/layer_(\d+)/self_attention/linear_0",
     [r"\1.blocks.\2.attn.query", r"\1.blocks.\2.attn.key", r"\1.blocks.\2.attn.value"]),
    (r"(encoder|decoder)/layer_(\d+)/self_attention/linear_1", [r"\1.blocks.\2.attn.out"]),
    (r"(encoder|decoder)/layer_(\d+)/self_attention/layer_norm", [r"\1.blocks.\2.attn_ln"]),
    (r"decoder/layer_(\d+)/attention/linear_0", [r"decoder.blocks.\1.cross_attn.query"]),
    (r"decoder/layer_(\d+)/attention/linear_1",
     [r"decoder.blocks.\1.cross_attn.key", r"decoder.blocks.\1.cross_attn.value"]),
    (r"decoder/layer_(\d+)/attention/linear_2", [r"decoder.blocks.\1.cross_attn.out"]),
    (r"decoder/layer_(\d+)/attention/layer_norm", [r"decoder.blocks.\1.cross_attn_ln"]),
    (r"(encoder|decoder)/layer_(\d+)/ffn/layer_norm", [r"\1.blocks.\2.mlp_ln"]),
    (r"(encoder|decoder)/layer_(\d+)/ffn/linear_0", [r"\1.blocks.\2.mlp.0"]),
    (r"(encoder|decoder)/layer_(\d+)/ffn/linear_1", [r"\1.blocks.\2.mlp.2"]),
    (r"encoder/layer_norm", [r"encoder.ln_post"]),
    (r"decoder/layer_norm", [r"decoder.ln"]),
    (r"encoder/(conv[12])", [r"encoder.\1"]),
    (r"(encoder|decoder)/position_encodings", [r"\1.positional_embedding"]),
    (r"decoder/embeddings", [r"decoder.token_embedding"]),
]
_CT2_LEAVES = {"weight": ".weight", "bias": ".bias", "gamma": ".weight", "beta": ".bias", "encodings": ""}

# CTranslate2 DataType ids -> torch dtypes.
_CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
_CT2_BINARY_VERSIONS = (4, 5, 6)


def detect_format(path: str) -> str:
    """``openai`` for a file, ``ctranslate2`` / ``huggingface`` for a folder, by the files it holds."""
    if os.path.isfile(path):
        return OPENAI
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.bin")):
            return CTRANSLATE2
        if is_hugging_face_folder(path):
            return HUGGING_FACE
        raise CheckpointError(path, "folder is neither CTranslate2 (model.bin) nor Hugging Face "
                                    f"(config.json + one of {', '.join(HF_WEIGHT_FILES)})")
    raise CheckpointError(path, "no such file or folder")


# ---------------------------------------------------------------- CTranslate2 reader

class _Reader:
    def __init__(self, path: str):
        self.path = path
        self.file = open(path, "rb")

    def bytes(self, n: int, what: str) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise CheckpointError(self.path, f"file is truncated: needed {n} bytes for {what}, got {len(data)}")
        return data

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.bytes(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", what)
        return self.bytes(length, what)[:-1].decode("utf-8")


def read_ctranslate2_variables(model_bin: str) -> Tuple[str, Dict[str, Tensor]]:
    """Reads a CTranslate2 ``model.bin``: (spec name, {name: tensor}) with aliases resolved
    and quantized weights turned back into float32."""
    reader = _Reader(model_bin)
    with reader.file:
        (version,) = reader.unpack("I", "the binary version")
        if version not in _CT2_BINARY_VERSIONS:
            raise CheckpointError(model_bin, f"unsupported CTranslate2 binary version {version} "
                                             f"(supported: {_CT2_BINARY_VERSIONS})")
        spec = reader.string("the spec name")
        reader.unpack("I", "the spec revision")
        (count,) = reader.unpack("I", "the variable count")
        variables: Dict[str, Tensor] = {}
        for _ in range(count):
            name = reader.string("a variable name")
            (rank,) = reader.unpack("B", name)
            shape = reader.unpack(f"{rank}I", name) if rank else ()
            dtype_id, n_bytes = reader.unpack("BI", name)
            if dtype_id not in _CT2_DTYPES:
                raise CheckpointError(model_bin, f"unknown CTranslate2 dtype id {dtype_id}", key=name)
            dtype = _CT2_DTYPES[dtype_id]
            data = bytearray(reader.bytes(n_bytes, f"variable {name!r}"))
            if n_bytes != math.prod(shape) * dtype.itemsize:
                raise CheckpointError(model_bin, f"{n_bytes} bytes do not hold a {dtype} tensor of this shape",
                                      key=name, expected_shape=shape, got_shape=(n_bytes // dtype.itemsize,))
            variables[name] = (torch.frombuffer(data, dtype=dtype).reshape(shape) if n_bytes
                               else torch.empty(shape, dtype=dtype))
        (n_aliases,) = reader.unpack("I", "the alias count")
        for _ in range(n_aliases):
            alias, target = reader.string("an alias"), reader.string("an alias target")
            variables[alias] = variables[target]
    for name in [n for n in variables if n.endswith("_scale")]:
        quantized = name[: -len("_scale")]
        if quantized in variables and not variables[quantized].is_floating_point():
            q, scale = variables[quantized], variables.pop(name).float()
            variables[quantized] = q.float() / scale.reshape(-1, *([1] * (q.dim() - 1)))
    return spec, variables


def ctranslate2_to_openai(variables: Dict[str, Tensor], path: str) -> Dict[str, Tensor]:
    """Renames CTranslate2 Whisper weights to openai-whisper state-dict names, splitting fused layers.

    Scalars (head counts, flags) and names outside the map are left out. The zero bias that
    CTranslate2 stores for the fused key projection is dropped: Whisper's key has none.
    """
    state: Dict[str, Tensor] = {}
    for name, value in variables.items():
        module, _, leaf = name.rpartition("/")
        if leaf not in _CT2_LEAVES or not value.is_floating_point():
            continue
        for pattern, targets in _CT2_TO_OPENAI:
            if not re.fullmatch(pattern, module):
                continue
            if value.shape[0] % len(targets):
                raise CheckpointError(path, f"fused layer does not split into {len(targets)} equal parts",
                                      key=name, got_shape=tuple(value.shape))
            for target, part in zip(targets, value.chunk(len(targets), dim=0)):
                openai_name = re.sub(pattern, target, module) + _CT2_LEAVES[leaf]
                if not openai_name.endswith(".key.bias"):
                    state[openai_name] = part
            break
    return state


def _ctranslate2_config(path: str, state: Dict[str, Tensor], variables: Dict[str, Tensor]) -> WhisperEncoderConfig:
    for key in ("encoder.conv1.weight", "encoder.positional_embedding"):
        if key not in state:
            raise CheckpointError(path, "missing variable needed for the encoder size", key=key)
    if "encoder/num_heads" not in variables:
        raise CheckpointError(path, "missing variable", key="encoder/num_heads")
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))}
    state_width, n_mels, _ = state["encoder.conv1.weight"].shape
    return WhisperEncoderConfig(
        n_mels=n_mels, n_audio_ctx=state["encoder.positional_embedding"].shape[0], n_audio_state=state_width,
        n_audio_head=int(variables["encoder/num_heads"]), n_audio_layer=len(layers))


def _read_ctranslate2(path: str) -> Tuple[WhisperEncoderConfig, Dict[str, Tensor], str]:
    model_bin = os.path.join(path, "model.bin")
    spec, variables = read_ctranslate2_variables(model_bin)
    if spec != "WhisperSpec":
        raise CheckpointError(model_bin, f"CTranslate2 spec is {spec!r}, not a Whisper model")
    state = ctranslate2_to_openai(variables, model_bin)
    return _ctranslate2_config(model_bin, state, variables), state, model_bin


# ---------------------------------------------------------------- openai-whisper and Hugging Face

def _read_openai(path: str) -> Tuple[WhisperEncoderConfig, Dict[str, Tensor], str]:
    checkpoint = load_torch_file(path)
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise CheckpointError(path, "not an openai-whisper checkpoint (needs 'dims' and 'model_state_dict')")
    dims = checkpoint["dims"]
    try:
        cfg = WhisperEncoderConfig(**{f: int(dims[f]) for f in
                                      ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")})
    except KeyError as error:
        raise CheckpointError(path, "dims lack an encoder size", key=f"dims.{error.args[0]}") from error
    return cfg, checkpoint["model_state_dict"], path


def _read_hugging_face(path: str) -> Tuple[WhisperEncoderConfig, Dict[str, Tensor], str]:
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            hf = json.load(f)
        cfg = WhisperEncoderConfig(n_mels=hf["num_mel_bins"], n_audio_ctx=hf["max_source_positions"],
                                   n_audio_state=hf["d_model"], n_audio_head=hf["encoder_attention_heads"],
                                   n_audio_layer=hf["encoder_layers"])
    except KeyError as error:
        raise CheckpointError(config_path, "config lacks an encoder size", key=error.args[0]) from error
    except (OSError, ValueError) as error:
        raise CheckpointError(config_path, f"cannot read: {error}") from error
    tensors, weights_path = read_hugging_face_tensors(path)
    state: Dict[str, Tensor] = {}
    for name, value in tensors.items():
        renamed = hugging_face_to_openai(name[len("model."):] if name.startswith("model.") else name)
        if renamed is not None:
            state[renamed] = value
    return cfg, state, weights_path


def hugging_face_to_openai(name: str) -> Optional[str]:
    """openai-whisper's name for a Hugging Face encoder weight (``encoder.…``); None for others."""
    for pattern, replacement in _HF_TO_OPENAI:
        renamed, hits = re.subn("^" + pattern, replacement, name)
        if hits:
            return renamed
    return None


# Each reader returns (encoder config, state dict in openai-whisper names, the file it read).
_READERS: Dict[str, Callable[[str], Tuple[WhisperEncoderConfig, Dict[str, Tensor], str]]] = {
    OPENAI: _read_openai, HUGGING_FACE: _read_hugging_face, CTRANSLATE2: _read_ctranslate2,
}


def load_whisper_encoder(path: str, device="cpu", dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Builds a WhisperEncoder from an openai ``.pt``, a Hugging Face folder or a CTranslate2 folder.

    Raises CheckpointError naming the file, the key and the shapes for unreadable files and
    for missing, extra or misshapen weights.
    """
    checkpoint_format = detect_format(path)
    cfg, state, source = _READERS[checkpoint_format](path)
    # Keys are reported in openai-whisper's names, the common language of the key maps above.
    renamed = "" if checkpoint_format == OPENAI else f" ({checkpoint_format} weight, openai-whisper name)"
    encoder = WhisperEncoder(cfg)
    expected = encoder.state_dict()
    encoder_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    for key, param in expected.items():
        if key not in encoder_state:
            raise CheckpointError(source, "missing encoder weight" + renamed, key="encoder." + key,
                                  expected_shape=tuple(param.shape))
        if encoder_state[key].shape != param.shape:
            raise CheckpointError(source, "encoder weight has the wrong shape" + renamed, key="encoder." + key,
                                  expected_shape=tuple(param.shape), got_shape=tuple(encoder_state[key].shape))
    extra = sorted(set(encoder_state) - set(expected))
    if extra:
        raise CheckpointError(source, f"{len(extra)} unexpected encoder weights{renamed}", key="encoder." + extra[0])
    encoder.load_state_dict({k: v.float() for k, v in encoder_state.items()})
    return encoder.to(device=device, dtype=dtype).eval()
