"""What the training/decoding dataset checks at start-up, skips, and reports, row by row."""
import logging

import numpy as np
import pytest
import soundfile

from wavllm_fairseq.data.audio import load_audio
from wavllm_fairseq.data.dataset import LOAD_ERROR, SAMPLES_PER_LLM_POSITION, WavLLMDataset, raise_load_error
from wavllm_fairseq.data.manifest import ManifestError
from wavllm_fairseq.text.templates import get_template
from wavllm_fairseq.text.tokenizer_files import load_tokenizer

HEADER = "id\taudio\tn_frames\tprompt\ttgt_text\twith_speech\n"


@pytest.fixture(scope="module")
def tokenizer(speech_corpus):
    return load_tokenizer(str(speech_corpus / "spm.model"))


def tone(seconds, channels=1):
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def manifest(tmp_path, rows):
    """rows: (id, audio file, n_frames[, prompt]); returns the manifest's path."""
    lines = [f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3] if len(r) > 3 else 'Say it.'}\tok\tTrue\n" for r in rows]
    path = tmp_path / "m.tsv"
    path.write_text(HEADER + "".join(lines))
    return str(path)


def dataset(path, tokenizer, **kwargs):
    return WavLLMDataset(path, tokenizer, get_template("llama2"), pad_id=0, **kwargs)


def test_a_file_with_no_samples_fails_at_start_up_or_is_skipped_by_name(tmp_path, tokenizer, caplog):
    soundfile.write(tmp_path / "ok.wav", tone(0.5), 16000)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    path = manifest(tmp_path, [("good", "ok.wav", 8000), ("hollow", "empty.wav", 8000)])
    with pytest.raises(ManifestError, match=r"line 3, id 'hollow': .*empty.wav: audio file has no samples"):
        dataset(path, tokenizer)
    with caplog.at_level(logging.WARNING):
        data = dataset(path, tokenizer, skip_bad_rows=True)
    assert [e.row.id for e in data.examples] == ["good"]
    assert "id 'hollow'" in caplog.text and "skipped 1 bad row(s) of 2" in caplog.text


def test_the_headers_frame_count_wins_over_a_wrong_n_frames_and_the_disagreement_is_logged(tmp_path, tokenizer,
                                                                                         caplog):
    soundfile.write(tmp_path / "long.wav", tone(3), 16000)
    soundfile.write(tmp_path / "short.wav", tone(0.5), 16000)
    # Placeholder counts as in the official release's manifests (111111, 12345 whatever the audio).
    path = manifest(tmp_path, [("long", "long.wav", 16000), ("short", "short.wav", 8000), ("odd", "long.wav", 111111)])
    with caplog.at_level(logging.WARNING):
        data = dataset(path, tokenizer)
    assert [e.audio_frames for e in data.examples] == [48000, 8000, 48000]
    text = [len(e.prefix) + len(e.suffix) + len(e.target) for e in data.examples]
    assert list(data.sizes) == [a + t * SAMPLES_PER_LLM_POSITION for a, t in zip([48000, 8000, 48000], text)]
    warnings = [r.getMessage() for r in caplog.records if "n_frames disagrees" in r.getMessage()]
    assert len(warnings) == 1  # once per manifest, with the count
    assert "2 row(s) of 3" in warnings[0] and "id 'long': n_frames 16000, audio 48000" in warnings[0]
    assert "id 'odd'" in warnings[0] and "id 'short'" not in warnings[0]


def test_rows_over_max_sample_size_are_skipped_by_name_and_the_prompt_does_not_count(tmp_path, tokenizer, caplog):
    soundfile.write(tmp_path / "long.wav", tone(3), 16000)
    soundfile.write(tmp_path / "short.wav", tone(1), 16000)
    long_prompt = " ".join(["Transcribe the audio clip into text."] * 20)
    path = manifest(tmp_path, [("long", "long.wav", 48000), ("short", "short.wav", 16000, long_prompt)])
    with caplog.at_level(logging.WARNING):
        data = dataset(path, tokenizer, max_sample_size=32000)
    assert [e.row.id for e in data.examples] == ["short"]
    assert data.sizes[0] > 32000  # its prompt's tokens would have pushed it over a limit that counted them
    assert "line 2, id 'long': 48000 audio samples, over --max-sample-size 32000" in caplog.text
    assert "skipped 1 row(s) of 2 longer than --max-sample-size 32000" in caplog.text


def nan_clip(tmp_path):
    wave = tone(0.5)
    wave[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", wave.astype(np.float32), 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "ok.wav", tone(0.5), 16000)
    return manifest(tmp_path, [("good", "ok.wav", 8000), ("broken", "nan.wav", 8000)])


def test_a_clip_with_nan_samples_stops_the_run_with_its_row_named_in_the_main_process(tmp_path, tokenizer):
    data = dataset(nan_clip(tmp_path), tokenizer)
    batch = data.collater([data[0], data[1]])  # as a DataLoader worker would build it
    assert isinstance(batch[LOAD_ERROR], ManifestError) and "net_input" in batch
    with pytest.raises(ManifestError, match=r"line 3, id 'broken': .*nan.wav: audio holds NaN or infinite samples"):
        raise_load_error(batch)


def test_a_clip_with_nan_samples_is_skipped_by_name_with_skip_bad_rows(tmp_path, tokenizer, caplog):
    data = dataset(nan_clip(tmp_path), tokenizer, skip_bad_rows=True)
    with caplog.at_level(logging.WARNING):
        batch = data.collater([data[0], data[1]])
        assert data.collater([data[1]]) == {}  # a batch of bad rows only is empty: fairseq passes over it
    raise_load_error(batch)
    assert batch["nsentences"] == 1 and batch["net_input"]["waves"].shape[0] == 1
    assert "skipped: " in caplog.text and "id 'broken'" in caplog.text


def test_a_stereo_24_bit_file_is_read_as_mono_with_its_length(tmp_path, tokenizer):
    stereo = tone(0.75, channels=2)
    stereo[:, 1] *= 0.5
    soundfile.write(tmp_path / "stereo.wav", stereo, 16000, subtype="PCM_24")
    data = dataset(manifest(tmp_path, [("s", "stereo.wav", 12000)]), tokenizer)
    assert data.examples[0].audio_frames == 12000
    wave = load_audio([str(tmp_path / "stereo.wav")])
    assert wave.shape == (12000,)
    np.testing.assert_allclose(wave.numpy(), stereo.mean(axis=1), atol=1e-6)


def test_max_tokens_smaller_than_one_row_names_the_row_and_what_would_do(tmp_path, tokenizer):
    from fairseq.data import ConcatDataset

    from wavllm_fairseq.errors import OptionError
    from wavllm_fairseq.tasks.wavllm import check_max_tokens

    soundfile.write(tmp_path / "long.wav", tone(3), 16000)
    soundfile.write(tmp_path / "short.wav", tone(1), 16000)
    data = dataset(manifest(tmp_path, [("short", "short.wav", 16000), ("long", "long.wav", 48000)]), tokenizer)
    need = int(data.sizes[1])
    for wrapped in (data, ConcatDataset([data, data])):  # a mixture of manifests is checked manifest by manifest
        with pytest.raises(OptionError, match=rf"--max-tokens 20000 .* line 3, id 'long' costs {need} .* "
                                              rf"at least {need}$"):
            check_max_tokens(wrapped, 20000)
    check_max_tokens(data, need)


def test_a_missing_manifest_and_a_mixture_weight_count_that_does_not_match_are_option_errors(tmp_path, tokenizer):
    from wavllm_fairseq.errors import OptionError
    from wavllm_fairseq.tasks.wavllm import WavLLMTask, WavLLMTaskConfig

    soundfile.write(tmp_path / "ok.wav", tone(0.5), 16000)
    manifest(tmp_path, [("a", "ok.wav", 8000)])
    task = WavLLMTask(WavLLMTaskConfig(data=str(tmp_path), tokenizer_path="unused", mixture_weights="1,2,3"),
                      tokenizer, get_template("llama2"))
    with pytest.raises(OptionError, match=rf"manifest not found: {tmp_path}/valid.tsv \(subset 'valid'"):
        task.load_dataset("valid")
    with pytest.raises(OptionError, match=r"--mixture-weights has 3 value\(s\) for 2 manifest\(s\)"):
        task.load_dataset("m,m")


def test_a_batch_carries_each_rows_audio_paths_and_collating_reads_no_file_metadata(tmp_path, tokenizer, monkeypatch):
    for name in ("a.wav", "b.wav"):
        soundfile.write(tmp_path / name, tone(0.5), 16000)
    ds = dataset(manifest(tmp_path, [("a", "a.wav", 8000), ("b", "b.wav", 8000)]), tokenizer)
    items = [ds[0], ds[1]]

    def no_stat(*args, **kwargs):
        raise AssertionError("os.stat while collating: only the model's encoder cache may read file metadata")

    monkeypatch.setattr("os.stat", no_stat)
    batch = ds.collater(items)
    assert batch["net_input"]["audio_paths"] == [[str(tmp_path / "a.wav")], [str(tmp_path / "b.wav")]]
