"""The released WavLLM checkpoint (``final.pt`` of microsoft/SpeechT5, folder ``WavLLM/``): reading
it safely, its key map to our model, and the architecture its tensors' shapes imply.

Every release key is renamed by exactly one row of :data:`RELEASE_KEYS` (or dropped as unused by
:data:`UNUSED_RELEASE_KEYS`); an unmatched key is an error. Whisper's and WavLM's own weights are
stored under Hugging Face's module names and go through those encoders' existing Hugging Face key
maps, so each name is mapped in one place.

What the shapes cannot tell, and what is taken instead (documented in the README):
- attention heads: Whisper's are 64 wide, LLaMA's ``head_dim`` wide (128 for LLaMA-2; an option);
  WavLM's count is the width of its relative-position table;
- WavLM's convolution strides (5 for kernel 10, else 2: every released WavLM) and its bucket
  distance (800); a layer-norm feature extractor means the pre-norm Large variant;
- the RMSNorm epsilon (1e-6: the release's ``ModelArgs`` default, not params.json's 1e-5) and
  LoRA alpha (32, the release's default; it only scales LoRA when no prompt-aware weight is used).
"""
from __future__ import annotations

import json
import pickletools
import re
import zipfile
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..common.checkpoint_errors import CheckpointError
from ..llama.config import LlamaConfig
from ..wavlm.checkpoint import HUGGING_FACE_KEYS as WAVLM_HUGGING_FACE_KEYS
from ..wavlm.checkpoint import to_our_names as wavlm_to_our_names
from ..wavlm.config import WavLMConfig
from ..whisper.checkpoint import hugging_face_to_openai
from ..whisper.config import WhisperEncoderConfig

LLAMA = "gpt_model.model_llama."
WHISPER_MODEL = "audio_encoder.model."
WAVLM_MODEL = "wavlm_encoder.model."

NORM_EPS = 1e-6
"""RMSNorm epsilon of the released code (its ``ModelArgs`` default)."""
LORA_ALPHA = 32.0
"""LoRA alpha of the released code (its ``ModelArgs`` default)."""
WHISPER_HEAD_DIM = 64
WAVLM_STRIDE_BY_KERNEL = {10: 5, 3: 2, 2: 2}
WAVLM_MAX_DISTANCE = 800

Transform = Optional[Callable[[Tensor], Tensor]]


def _transpose(t: Tensor) -> Tensor:
    return t.t()


RELEASE_KEYS: List[Tuple[str, str, Transform]] = [
    # (release key regex, our key, transform). The release stores LoRA as x @ A @ B with A (in x r)
    # and B (r x out); ours is nn.Linear-shaped: A (r x in), B (out x r).
    (LLAMA + r"layers\.(\d+)\.attention\.(w[qkvo])_lora_A", r"decoder.llm.layers.\1.attention.\2.lora_A", _transpose),
    (LLAMA + r"layers\.(\d+)\.attention\.(w[qkvo])_lora_B", r"decoder.llm.layers.\1.attention.\2.lora_B", _transpose),
    (LLAMA + r"scale_fc_1\.(weight|bias)", r"encoder.prompt_adapter.fc1.\1", None),
    (LLAMA + r"scale_fc_2\.(weight|bias)", r"encoder.prompt_adapter.fc2.\1", None),
    (LLAMA + r"scale_weight_attention\.(weight|bias)", r"encoder.prompt_adapter.score.\1", None),
    (LLAMA + r"(tok_embeddings\.weight|norm\.weight|output\.weight)", r"decoder.llm.\1", None),
    (LLAMA + r"layers\.(\d+)\.(attention\.w[qkvo]\.weight|feed_forward\.w[123]\.weight|attention_norm\.weight"
             r"|ffn_norm\.weight)", r"decoder.llm.layers.\1.\2", None),
    (r"(audio|wavlm)_encoder\.subsample\.conv_layers\.([01])\.(weight|bias)", r"encoder.\1_branch.subsample.conv_layers.\2.\3",
     None),
    (r"(audio|wavlm)_encoder\.adapter\.down_layer\.(weight|bias)", r"encoder.\1_branch.adapter.down.\2", None),
    (r"(audio|wavlm)_encoder\.adapter\.up_layer\.(weight|bias)", r"encoder.\1_branch.adapter.up.\2", None),
    (r"(audio|wavlm)_encoder\.adapter\.layer_norm\.(weight|bias)", r"encoder.\1_branch.adapter.norm.\2", None),
    (r"(audio|wavlm)_encoder\.projector\.(weight|bias)", r"encoder.\1_branch.projector.\2", None),
    (r"wavlm_encoder\.output_weights", r"encoder.wavlm_layer_weights.weights", None),
    (r"wavlm_audio_proj\.(weight|bias)", r"encoder.fusion.proj.\1", None),
]
"""The release's own modules -> ours. ``audio`` is the release's name for the Whisper stream."""

UNUSED_RELEASE_KEYS = [r"audio_proj\.(weight|bias)", WAVLM_MODEL + r"masked_spec_embed"]
"""Trained but never used at inference by the release: dropped."""

_TORCH_MODULES = ("torch", "collections", "builtins", "_codecs")


class _Dropped:
    """Stands in for any object of a class outside tensors and plain containers (fairseq's meters,
    omegaconf configs, argparse namespaces): built from nothing, it keeps none of its state."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _pickle_globals(path: str) -> List[str]:
    """The classes and functions a torch zip checkpoint's pickle names (without running it)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointError(path, "a zip file without a PyTorch pickle (data.pkl): not a checkpoint")
        data = archive.read(pickles[0])
    names, strings = [], []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            names.append(arg.replace(" ", "."))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.append(f"{strings[-2]}.{strings[-1]}")
    return sorted(set(names))


def _describe_non_checkpoint(path: str) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty file, not a checkpoint"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:200]:
        return "an HTML page, not a checkpoint (an expired or unauthorised download link?)"
    if not head.startswith(b"PK"):
        return "not a PyTorch zip checkpoint (no zip signature at the start)"
    return None


def read_release_weights(path: str) -> Dict[str, Tensor]:
    """The ``model`` tensors of the release's ``final.pt``, memory-mapped (read on demand).

    The pickle is read with torch's weights-only unpickler; every class it names outside torch,
    plain containers and the allow-list of fairseq's checkpoints (see ``checkpoint_safety``) is
    replaced by a placeholder that runs no code and keeps nothing.
    """
    try:
        problem = _describe_non_checkpoint(path)
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    if problem:
        raise CheckpointError(path, problem)
    try:
        allowed = {entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
                   for entry in torch.serialization.get_safe_globals()}
        foreign = [n for n in _pickle_globals(path) if n.split(".")[0] not in _TORCH_MODULES and n not in allowed]
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise CheckpointError(path, f"truncated or damaged zip archive ({e})") from None
    try:
        with torch.serialization.safe_globals([(_Dropped, name) for name in foreign]):
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / pickle errors for damaged files
        raise CheckpointError(path, f"unreadable PyTorch file, truncated or damaged ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(path, "not a fairseq checkpoint (no 'model' dictionary of tensors)")
    weights = state["model"]
    if not any(k.startswith(LLAMA) for k in weights):
        raise CheckpointError(path, f"not a WavLLM release checkpoint: no '{LLAMA}*' weights")
    return weights


def _rename_release_key(key: str) -> Tuple[Optional[str], Transform]:
    for pattern, replacement, transform in RELEASE_KEYS:
        renamed, hits = re.subn("^" + pattern + "$", replacement, key)
        if hits:
            return renamed.replace("encoder.audio_branch.", "encoder.whisper_branch."), transform
    return None, None


def release_name(our_key: str) -> Optional[str]:
    """The release's name for one of our keys that :data:`RELEASE_KEYS` maps (None for others)."""
    our_key = our_key.replace("encoder.whisper_branch.", "encoder.audio_branch.")
    for pattern, replacement, _ in RELEASE_KEYS:
        our_pattern = re.escape(replacement)
        for n in range(1, 4):
            our_pattern = our_pattern.replace(re.escape(f"\\{n}"), "(.+?)")
        match = re.fullmatch(our_pattern, our_key)
        if match:
            parts = iter(match.groups())
            return re.sub(r"\([^)]*\)", lambda _: next(parts), pattern).replace("\\.", ".")
    return None


def _layer_count(weights: Dict[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in weights if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _need(weights: Dict[str, Tensor], path: str, key: str) -> Tensor:
    if key not in weights:
        raise CheckpointError(path, "missing weight needed to read the model's size", key=key)
    return weights[key]


def whisper_config(weights: Dict[str, Tensor], path: str) -> WhisperEncoderConfig:
    width, n_mels, _ = _need(weights, path, WHISPER_MODEL + "conv1.weight").shape
    ctx = _need(weights, path, WHISPER_MODEL + "embed_positions.weight").shape[0]
    return WhisperEncoderConfig(n_mels=n_mels, n_audio_ctx=ctx, n_audio_state=width,
                                n_audio_head=width // WHISPER_HEAD_DIM,
                                n_audio_layer=_layer_count(weights, WHISPER_MODEL + "layers."))


def wavlm_config(weights: Dict[str, Tensor], path: str) -> WavLMConfig:
    extractor = WAVLM_MODEL + "feature_extractor.conv_layers."
    convs = []
    for i in range(_layer_count(weights, extractor)):
        channels, _, kernel = _need(weights, path, f"{extractor}{i}.conv.weight").shape
        if kernel not in WAVLM_STRIDE_BY_KERNEL:
            raise CheckpointError(path, f"WavLM convolution of kernel {kernel}: no known stride",
                                  key=f"{extractor}{i}.conv.weight")
        convs.append((channels, kernel, WAVLM_STRIDE_BY_KERNEL[kernel]))
    layer_norm = f"{extractor}1.layer_norm.weight" in weights
    width = _need(weights, path, WAVLM_MODEL + "feature_projection.projection.weight").shape[0]
    pos_conv = WAVLM_MODEL + "encoder.pos_conv_embed.conv."
    pos_weight = weights.get(pos_conv + "weight_v", weights.get(pos_conv + "weight"))
    if pos_weight is None:
        raise CheckpointError(path, "missing weight needed to read the model's size", key=pos_conv + "weight_v")
    buckets, heads = _need(weights, path, WAVLM_MODEL + "encoder.layers.0.attention.rel_attn_embed.weight").shape
    return WavLMConfig(
        conv_feature_layers=convs, extractor_mode="layer_norm" if layer_norm else "default",
        conv_bias=f"{extractor}0.conv.bias" in weights,
        encoder_layers=_layer_count(weights, WAVLM_MODEL + "encoder.layers."), encoder_embed_dim=width,
        encoder_ffn_embed_dim=_need(
            weights, path, WAVLM_MODEL + "encoder.layers.0.feed_forward.intermediate_dense.weight").shape[0],
        encoder_attention_heads=heads, conv_pos=pos_weight.shape[2], conv_pos_groups=width // pos_weight.shape[1],
        relative_position_embedding=True, gru_rel_pos=True, num_buckets=buckets, max_distance=WAVLM_MAX_DISTANCE,
        layer_norm_first=layer_norm, normalize_waveform=layer_norm,
    )


def llm_config(weights: Dict[str, Tensor], path: str, head_dim: int) -> LlamaConfig:
    vocab, dim = _need(weights, path, LLAMA + "tok_embeddings.weight").shape
    kv_width = _need(weights, path, LLAMA + "layers.0.attention.wk.weight").shape[0]
    if dim % head_dim or kv_width % head_dim:
        raise CheckpointError(path, f"LLM width {dim} is not a multiple of the head width {head_dim} (--llm-head-dim)")
    return LlamaConfig(
        dim=dim, n_layers=_layer_count(weights, LLAMA + "layers."), n_heads=dim // head_dim,
        n_kv_heads=kv_width // head_dim, vocab_size=vocab,
        ffn_dim=_need(weights, path, LLAMA + "layers.0.feed_forward.w1.weight").shape[0], norm_eps=NORM_EPS,
    )


def _config_json(config) -> str:
    return json.dumps(config.__dict__, separators=(",", ":"))


def release_architecture(weights: Dict[str, Tensor], path: str, llm_head_dim: int = 128) -> Dict[str, object]:
    """WavLLMConfig options of the model these weights belong to (the release's quirks included)."""
    lora_targets = [t for t in "qkvo" if f"{LLAMA}layers.0.attention.w{t}_lora_A" in weights]
    if not lora_targets:
        raise CheckpointError(path, "no LoRA weights: the release has them on the attention projections",
                              key=f"{LLAMA}layers.0.attention.wq_lora_A")
    return dict(
        whisper_path=None, wavlm_path=None, llm_path=None,
        whisper_preset=_config_json(whisper_config(weights, path)),
        wavlm_preset=_config_json(wavlm_config(weights, path)),
        llm_preset=_config_json(llm_config(weights, path, llm_head_dim)),
        whisper_pad_to_30s=True, whisper_count_partial_frame=True, whisper_windows_apart=True,
        lora_rank=weights[f"{LLAMA}layers.0.attention.w{lora_targets[0]}_lora_A"].shape[1],
        lora_alpha=LORA_ALPHA, lora_targets=",".join(lora_targets),
        prompt_adapter=f"{LLAMA}scale_fc_1.weight" in weights,
    )


def to_our_weights(weights: Dict[str, Tensor], path: str,
                   wavlm: WavLMConfig) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """(every release weight under our model's name, our name -> release name); unknown keys are errors."""
    ours: Dict[str, Tensor] = {}
    names: Dict[str, str] = {}
    wavlm_weights: Dict[str, Tensor] = {}
    for key, value in weights.items():
        if any(re.fullmatch(p, key) for p in UNUSED_RELEASE_KEYS):
            continue
        if key.startswith(WAVLM_MODEL):
            wavlm_weights[key[len(WAVLM_MODEL):]] = value
            continue
        if key.startswith(WHISPER_MODEL):
            renamed, transform = hugging_face_to_openai("encoder." + key[len(WHISPER_MODEL):]), None
            if renamed is not None:
                renamed = "encoder.whisper." + renamed[len("encoder."):]
        else:
            renamed, transform = _rename_release_key(key)
        if renamed is None:
            raise CheckpointError(path, "release weight that no entry of the key map covers", key=key,
                                  got_shape=tuple(value.shape))
        if renamed in names:
            raise CheckpointError(path, f"two release weights map to our {renamed!r}: {names[renamed]!r} and this",
                                  key=key)
        ours[renamed] = transform(value).contiguous() if transform else value
        names[renamed] = key
    wavlm_ours, wavlm_names = wavlm_to_our_names(wavlm_weights, WAVLM_HUGGING_FACE_KEYS, wavlm, path,
                                                 prefix=WAVLM_MODEL)
    ours.update({"encoder.wavlm." + k: v for k, v in wavlm_ours.items()})
    names.update({"encoder.wavlm." + k: v for k, v in wavlm_names.items()})
    return ours, names
