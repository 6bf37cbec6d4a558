"""Format detection, the CTranslate2 reader (fused and int8 weights) and load errors."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError
from wavllm_fairseq.models.whisper import WhisperEncoder, detect_format, load_whisper_encoder
from wavllm_fairseq.models.whisper.checkpoint import CTRANSLATE2, HUGGING_FACE, OPENAI

_CT2_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_ct2_model(folder, variables, aliases=()):
    """Writes a CTranslate2 model folder in binary version 6, as its converter lays it out."""
    os.makedirs(folder, exist_ok=True)
    out = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        value = np.ascontiguousarray(value)
        out += _ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", _CT2_TYPE_IDS[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases:
        out += _ct2_string(alias) + _ct2_string(target)
    with open(os.path.join(folder, "model.bin"), "wb") as f:
        f.write(out)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write("{}")


def _quantize_int8(weight: np.ndarray):
    scale = 127.0 / np.abs(weight).max(axis=1)
    return np.rint(weight * scale[:, None]).astype(np.int8), scale.astype(np.float32)


@pytest.fixture
def tiny_ct2(tmp_path):
    """A 1-layer CTranslate2 Whisper encoder (4 mels, width 8, 6 positions) with int8 linear
    weights, float16 convolutions and float32 norms; returns (folder, expected openai-named weights)."""
    rng = np.random.default_rng(0)
    width, mels = 8, 4
    f16 = lambda *shape: rng.standard_normal(shape).astype(np.float16)  # noqa: E731
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    qkv_weight, out_weight = f32(3 * width, width), f32(width, width)
    fc1_weight, fc2_weight = f32(4 * width, width), f32(width, 4 * width)
    qkv_bias = f32(3 * width)
    qkv_bias[width:2 * width] = 0  # Whisper's key has no bias; the converter stores zeros
    variables, expected = {}, {}

    def linear(ct2_name, weight, bias):
        q, scale = _quantize_int8(weight)
        variables[f"{ct2_name}/weight"], variables[f"{ct2_name}/weight_scale"] = q, scale
        variables[f"{ct2_name}/bias"] = bias
        return q.astype(np.float32) / scale[:, None]

    dequantized_qkv = linear("encoder/layer_0/self_attention/linear_0", qkv_weight, qkv_bias)
    for part, name in enumerate(("query", "key", "value")):
        expected[f"blocks.0.attn.{name}.weight"] = dequantized_qkv[part * width:(part + 1) * width]
    expected["blocks.0.attn.query.bias"] = qkv_bias[:width]
    expected["blocks.0.attn.value.bias"] = qkv_bias[2 * width:]
    for ct2_name, ours, weight in (("self_attention/linear_1", "attn.out", out_weight),
                                   ("ffn/linear_0", "mlp.0", fc1_weight), ("ffn/linear_1", "mlp.2", fc2_weight)):
        bias = f32(weight.shape[0])
        expected[f"blocks.0.{ours}.weight"] = linear(f"encoder/layer_0/{ct2_name}", weight, bias)
        expected[f"blocks.0.{ours}.bias"] = bias
    for ct2_name, ours in (("encoder/layer_0/self_attention/layer_norm", "blocks.0.attn_ln"),
                           ("encoder/layer_0/ffn/layer_norm", "blocks.0.mlp_ln"), ("encoder/layer_norm", "ln_post")):
        variables[f"{ct2_name}/gamma"] = expected[f"{ours}.weight"] = f32(width)
        variables[f"{ct2_name}/beta"] = expected[f"{ours}.bias"] = f32(width)
    for conv, fan_in in (("conv1", mels), ("conv2", width)):
        variables[f"encoder/{conv}/weight"] = expected[f"{conv}.weight"] = f16(width, fan_in, 3)
        variables[f"encoder/{conv}/bias"] = expected[f"{conv}.bias"] = f16(width)
    variables["encoder/position_encodings/encodings"] = expected["positional_embedding"] = f32(6, width)
    variables["encoder/num_heads"] = np.array(2, dtype=np.int16)
    folder = tmp_path / "ct2"
    write_ct2_model(folder, variables)
    return str(folder), expected


def test_ctranslate2_int8_fused_weights(tiny_ct2):
    folder, expected = tiny_ct2
    assert detect_format(folder) == CTRANSLATE2
    encoder = load_whisper_encoder(folder)
    assert (encoder.cfg.n_mels, encoder.cfg.n_audio_state, encoder.cfg.n_audio_head,
            encoder.cfg.n_audio_layer, encoder.cfg.n_audio_ctx) == (4, 8, 2, 1, 6)
    state = encoder.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.allclose(state[key], torch.from_numpy(value.astype(np.float32)), atol=1e-6), key


def test_truncated_ctranslate2_file(tiny_ct2):
    folder, _ = tiny_ct2
    model_bin = os.path.join(folder, "model.bin")
    with open(model_bin, "r+b") as f:
        f.truncate(os.path.getsize(model_bin) // 2)
    with pytest.raises(CheckpointError, match="truncated") as error:
        load_whisper_encoder(folder)
    assert model_bin in str(error.value) and "variable" in str(error.value)


def test_detect_format(tmp_path, openai_checkpoint):
    assert detect_format(openai_checkpoint[0]) == OPENAI
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"")
    assert detect_format(str(tmp_path / "hf")) == HUGGING_FACE
    with pytest.raises(CheckpointError, match="neither"):
        detect_format(str(tmp_path))
    with pytest.raises(CheckpointError, match="no such file"):
        detect_format(str(tmp_path / "absent.pt"))


def test_truncated_openai_file(tmp_path, openai_checkpoint):
    data = open(openai_checkpoint[0], "rb").read()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_whisper_encoder(str(path))
    assert str(path) in str(error.value)


def _resave(tmp_path, openai_checkpoint, edit):
    checkpoint = torch.load(openai_checkpoint[0], weights_only=True)
    edit(checkpoint["model_state_dict"])
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    return str(path)


def test_missing_key(tmp_path, openai_checkpoint):
    path = _resave(tmp_path, openai_checkpoint, lambda sd: sd.pop("encoder.blocks.1.attn.query.weight"))
    with pytest.raises(CheckpointError, match="missing") as error:
        load_whisper_encoder(path)
    assert path in str(error.value) and "encoder.blocks.1.attn.query.weight" in str(error.value)
    assert error.value.key == "encoder.blocks.1.attn.query.weight"


def test_shape_mismatch(tmp_path, openai_checkpoint):
    path = _resave(tmp_path, openai_checkpoint, lambda sd: sd.update({"encoder.ln_post.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError, match="wrong shape") as error:
        load_whisper_encoder(path)
    message = str(error.value)
    assert path in message and "encoder.ln_post.weight" in message and "(64,)" in message and "(65,)" in message


def test_not_a_whisper_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="openai-whisper"):
        load_whisper_encoder(str(path))


def test_hugging_face_missing_key(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    config = transformers.WhisperConfig(
        vocab_size=100, num_mel_bins=80, d_model=16, encoder_layers=1, encoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(tmp_path)
    weights = str(tmp_path / "model.safetensors")
    assert isinstance(load_whisper_encoder(str(tmp_path)), WhisperEncoder)
    tensors = load_file(weights)
    del tensors["model.encoder.layers.0.fc1.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing") as error:
        load_whisper_encoder(str(tmp_path))
    assert weights in str(error.value) and "encoder.blocks.0.mlp.0.weight" in str(error.value)
