"""The Python API: fairseq-generate's answers for the same checkpoint, prompts and options."""
import os
import re
import sys

import numpy as np
import pytest
import soundfile
import torch

from tests.helpers import MAX_NEW_TOKENS, REPO

from wavllm_fairseq.data.audio import AudioError
from wavllm_fairseq.data.manifest import ManifestRow, read_manifest, write_manifest
from wavllm_fairseq.inference import Decoding

TEXT_PROMPT = "Repeat after me: the red cat sees a small dog"


@pytest.fixture(scope="module")
def mixed_inputs(speech_corpus, tmp_path_factory):
    """The test clips as files, one of them at 22.05 kHz in stereo, and a text-only prompt: as a
    manifest for fairseq-generate and as the API's inputs (one clip as a numpy array)."""
    folder = tmp_path_factory.mktemp("api_inputs")
    rows = read_manifest(str(speech_corpus / "test.tsv"))
    audios, prompts, manifest = [], [], []
    for i, row in enumerate(rows):
        path = str(speech_corpus / row.audio[0])
        audios.append(path)
        prompts.append(row.prompt)
        manifest.append(ManifestRow(f"clip-{i}", [path], row.n_frames, row.prompt, row.tgt_text, True))
    wave, _ = soundfile.read(audios[0], dtype="float32")
    stereo = np.stack([np.interp(np.arange(0, len(wave), 16000 / 22050), np.arange(len(wave)), wave)] * 2, axis=1)
    resampled = str(folder / "stereo_22k.wav")
    soundfile.write(resampled, stereo, 22050, subtype="FLOAT")
    audios.append((stereo.astype(np.float32), 22050))
    prompts.append("What does the speaker say?")
    manifest.append(ManifestRow("stereo-22k", [resampled], len(wave), prompts[-1], "x", True))
    audios.append(None)
    prompts.append(TEXT_PROMPT)
    manifest.append(ManifestRow("text-only", [], 0, TEXT_PROMPT, "x", False))
    write_manifest(str(folder / "api.tsv"), manifest)
    return folder, audios, prompts


def fairseq_generate_answers(run_fairseq, data, tokenizer, checkpoint, results, *options):
    run_fairseq("generate", [
        data, "--user-dir", f"{REPO}/wavllm_fairseq", "--task", "wavllm", "--tokenizer-path", tokenizer,
        "--path", checkpoint, "--gen-subset", "api", "--max-tokens", "400000", "--cpu",
        "--max-len-b", MAX_NEW_TOKENS, "--results-path", results, *options], cwd=data)
    out = (results / "generate-api.txt").read_text()
    return {int(i): text for i, text in re.findall(r"^H-(\d+)\t\S+\t(.*)$", out, flags=re.M)}


@pytest.mark.parametrize("beam", [1, 4])
def test_answers_equal_fairseq_generate(tiny_model, tiny_checkpoint, mixed_inputs, speech_corpus, run_fairseq, beam):
    folder, audios, prompts = mixed_inputs
    expected = fairseq_generate_answers(run_fairseq, folder, speech_corpus / "spm.model", tiny_checkpoint,
                                        folder / f"gen{beam}", "--beam", beam)
    answers = tiny_model.generate(audios, prompts, beam=beam, max_new_tokens=MAX_NEW_TOKENS)
    assert answers == [expected[i] for i in range(len(prompts))]
    assert sum(len(a.split()) for a in answers) >= 2 * len(answers)  # several tokens, not empty answers


def test_streamed_tokens_grow_into_the_answer(tiny_model, mixed_inputs):
    _, audios, prompts = mixed_inputs
    queries = [tiny_model.query(a, p) for a, p in zip(audios[:2], prompts[:2])]
    seen = {0: [], 1: []}
    answers = tiny_model.answer(queries, Decoding(max_new_tokens=MAX_NEW_TOKENS),
                                on_tokens=lambda row, tokens: seen[row].append(list(tokens)))
    for row, answer in enumerate(answers):
        steps = seen[row]
        assert [len(s) for s in steps] == list(range(1, len(steps) + 1))
        assert all(answer.tokens[: len(s)] == s for s in steps)
        assert len(steps) >= len(answer.tokens) - 1 >= 1


def test_sampling_is_reproducible_with_a_seed(tiny_model, mixed_inputs):
    _, audios, prompts = mixed_inputs
    options = dict(sampling=True, temperature=1.5, top_p=0.9, max_new_tokens=6, seed=3)
    first = tiny_model.generate(audios[:2], prompts[:2], **options)
    assert tiny_model.generate(audios[:2], prompts[:2], **options) == first


def test_bfloat16_decodes(tiny_checkpoint, mixed_inputs):
    from wavllm_fairseq import WavLLM

    _, audios, prompts = mixed_inputs
    model = WavLLM.from_checkpoint(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
    answers = model.generate(audios[-2:], prompts[-2:], max_new_tokens=6)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers) and any(answers)


def test_unusable_audio_is_named(tiny_model, tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not a wave file")
    with pytest.raises(AudioError, match=r"notes\.wav: unreadable audio"):
        tiny_model.generate([str(not_audio)], ["Transcribe."])
    with pytest.raises(AudioError, match=r"missing\.wav: audio file not found"):
        tiny_model.generate([str(tmp_path / "missing.wav")], ["Transcribe."])
    with pytest.raises(AudioError, match=r"audio #1: waveform holds NaN"):
        tiny_model.generate([None, np.array([0.0, np.nan])], ["Hi.", "Transcribe."])
    with pytest.raises(AudioError, match=r"audio #0: empty waveform"):
        tiny_model.generate([(np.zeros(0, dtype=np.float32), 8000)], ["Transcribe."])
    with pytest.raises(ValueError, match="same length"):
        tiny_model.generate([None, None], ["Hi."])


def test_a_missing_checkpoint_is_named(tmp_path):
    from wavllm_fairseq import WavLLM
    from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"nothing\.pt: checkpoint not found"):
        WavLLM.from_checkpoint(str(tmp_path / "nothing.pt"))
    (tmp_path / "page.pt").write_text("<html>the download link expired</html>")
    with pytest.raises(CheckpointError, match=r"page\.pt: unreadable PyTorch file"):
        WavLLM.from_checkpoint(str(tmp_path / "page.pt"))


def test_a_tokenizer_given_replaces_the_one_recorded(tiny_model, tiny_checkpoint, speech_corpus, tmp_path, mixed_inputs):
    import shutil

    from wavllm_fairseq import WavLLM

    _, audios, prompts = mixed_inputs
    moved = tmp_path / "moved.model"
    shutil.copy(speech_corpus / "spm.model", moved)
    model = WavLLM.from_checkpoint(str(tiny_checkpoint), tokenizer=str(moved), device="cpu")
    assert model.task.cfg.tokenizer_path == str(moved) != tiny_model.task.cfg.tokenizer_path
    assert model.generate(audios[-1:], prompts[-1:], max_new_tokens=4) == tiny_model.generate(
        audios[-1:], prompts[-1:], max_new_tokens=4)


def test_the_plugin_import_leaves_the_server_out():
    """fairseq imports the package for --user-dir: the API comes with it, the server's libraries do not."""
    import subprocess

    code = ("import sys, wavllm_fairseq; from wavllm_fairseq import WavLLM; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'openai') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
