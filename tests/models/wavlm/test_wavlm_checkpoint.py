"""WavLM checkpoint errors name the file, the key (in the checkpoint's own names) and the shapes."""
from __future__ import annotations

import json

import pytest
import torch

from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError
from wavllm_fairseq.models.wavlm import WAVLM_PRESETS, WavLMEncoder, load_wavlm
from wavllm_fairseq.models.wavlm.checkpoint import HUGGING_FACE_KEYS, authors_keys, rename_key

from .conftest import authors_checkpoint, random_hf_model


@pytest.fixture()
def authors_file(tmp_path):
    torch.manual_seed(0)
    checkpoint = authors_checkpoint(WavLMEncoder(WAVLM_PRESETS["tiny_test"]))

    def write(edit=None):
        data = {"cfg": dict(checkpoint["cfg"]), "model": dict(checkpoint["model"])}
        if edit:
            edit(data)
        path = tmp_path / "WavLM-Base+.pt"
        torch.save(data, path)
        return str(path)

    return write


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_errors")
    random_hf_model("base").save_pretrained(str(folder))
    return folder


def test_truncated_authors_file(authors_file):
    path = authors_file()
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_wavlm(path)
    assert error.value.path == path and path in str(error.value)


def test_not_a_wavlm_checkpoint(tmp_path):
    path = str(tmp_path / "other.pt")
    torch.save({"model_state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="'cfg' and 'model'"):
        load_wavlm(path)


def test_missing_key_is_named_as_in_the_file(authors_file):
    path = authors_file(lambda data: data["model"].pop("encoder.layers.1.self_attn.grep_a"))
    with pytest.raises(CheckpointError) as error:
        load_wavlm(path)
    assert error.value.key == "encoder.layers.1.self_attn.grep_a" and error.value.expected_shape == (1, 2, 1, 1)
    assert path in str(error.value) and "grep_a" in str(error.value)


def test_shape_mismatch_names_key_and_shapes(authors_file):
    def edit(data):
        data["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(65, 32)

    path = authors_file(edit)
    with pytest.raises(CheckpointError) as error:
        load_wavlm(path)
    assert error.value.key == "encoder.layers.0.fc1.weight"
    assert (error.value.expected_shape, error.value.got_shape) == ((64, 32), (65, 32))
    assert "(64, 32)" in str(error.value) and "(65, 32)" in str(error.value)


def test_unexpected_key(authors_file):
    path = authors_file(lambda data: data["model"].update({"label_embs_concat": torch.zeros(3)}))
    with pytest.raises(CheckpointError) as error:
        load_wavlm(path)
    assert error.value.key == "label_embs_concat"


def test_conv_layers_string_is_never_evaluated(authors_file, tmp_path):
    marker = tmp_path / "evaluated"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    path = authors_file(lambda data: data["cfg"].update(conv_feature_layers=code))
    with pytest.raises(CheckpointError) as error:
        load_wavlm(path)
    assert error.value.key == "cfg.conv_feature_layers" and not marker.exists()


def test_missing_cfg_field(authors_file):
    path = authors_file(lambda data: data["cfg"].pop("encoder_layers"))
    with pytest.raises(CheckpointError) as error:
        load_wavlm(path)
    assert error.value.key == "cfg.encoder_layers"


def test_hugging_face_missing_key_uses_transformers_names(hf_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(hf_dir / "model.safetensors"))
    del tensors["encoder.layers.0.attention.gru_rel_pos_const"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(CheckpointError) as error:
        load_wavlm(str(tmp_path))
    assert error.value.key == "encoder.layers.0.attention.gru_rel_pos_const"
    assert str(tmp_path / "model.safetensors") in str(error.value)


def test_hugging_face_truncated_weights_and_bad_config(hf_dir, tmp_path):
    data = (hf_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 3])
    config = json.loads((hf_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        load_wavlm(str(tmp_path))
    assert error.value.path == str(tmp_path / "model.safetensors")
    del config["num_buckets"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        load_wavlm(str(tmp_path))
    assert error.value.key == "num_buckets" and error.value.path == str(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no such file"):
        load_wavlm(str(tmp_path / "absent"))


def test_key_tables_rename_both_ways():
    names = list(WavLMEncoder(WAVLM_PRESETS["tiny_test"]).state_dict())
    for table in (HUGGING_FACE_KEYS, authors_keys("default"), authors_keys("layer_norm")):
        for name in names:
            theirs = rename_key(name, table, to_ours=False)
            assert theirs is not None and rename_key(theirs, table) == name
    assert rename_key("encoder.layers.11.attention.rel_attn_embed.weight", HUGGING_FACE_KEYS) == \
        "encoder.layers.11.self_attn.relative_attention_bias.weight"
    assert rename_key("feature_extractor.conv_layers.3.2.1.weight", authors_keys("layer_norm")) == \
        "feature_extractor.conv_layers.3.norm.weight"
