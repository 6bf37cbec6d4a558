"""python -m wavllm_fairseq.evaluate end to end on a tiny model: outputs, agreement with
fairseq-generate, prompt variants, the chart, and resume from the cache."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from wavllm_fairseq.data.manifest import read_manifest, write_manifest
from wavllm_fairseq.evaluate import Evaluation, cache_key, find_sets
from wavllm_fairseq.evaluation.decode import DecodingOptions
from wavllm_fairseq.evaluation.prompts import DEFAULT_POOL, load_pool
from wavllm_fairseq.evaluation.scoring import DecodedRow, score_set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.helpers import train_args
SV_PROMPT = "Is there only one speaker in the audio clip?"
II_PROMPT = "Transcribe the audio clip into text. Then: Is there only one speaker in the audio clip?"


@pytest.fixture(scope="module")
def test_sets(speech_corpus, tmp_path_factory):
    """ASR, SV and II sets on the corpus's test audio (absolute paths), and a train manifest to ignore."""
    data = tmp_path_factory.mktemp("sets")
    asr = read_manifest(str(speech_corpus / "test.tsv"))
    for r in asr:
        r.audio = [str(speech_corpus / a) for a in r.audio]
    write_manifest(str(data / "test_asr.tsv"), asr)
    sv = [r.__class__(r.id, r.audio, r.n_frames, SV_PROMPT, "Yes", True) for r in asr]
    write_manifest(str(data / "test_sv.tsv"), sv)
    ii = [r.__class__(r.id, r.audio, r.n_frames, II_PROMPT, f"Transcript: {r.tgt_text} Answer: Yes", True, task="ii")
          for r in asr]
    write_manifest(str(data / "test_ii.tsv"), ii)
    shutil.copy(speech_corpus / "train.tsv", data / "train.tsv")
    return data


@pytest.fixture(scope="module")
def checkpoints(speech_corpus, tmp_path_factory, run_fairseq):
    """Two checkpoints of a tiny model (3 and 4 updates)."""
    save = tmp_path_factory.mktemp("eval_ckpt")
    run_fairseq("train", train_args(speech_corpus, save, 3), cwd=save)
    (save / "a").mkdir()
    shutil.copy(save / "checkpoint_last.pt", save / "a" / "checkpoint_last.pt")
    run_fairseq("train", train_args(speech_corpus, save, 4), cwd=save)
    (save / "b").mkdir()
    shutil.copy(save / "checkpoint_last.pt", save / "b" / "checkpoint_last.pt")
    return [save / "a" / "checkpoint_last.pt", save / "b" / "checkpoint_last.pt"]


def evaluate(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "wavllm_fairseq.evaluate", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    return proc


@pytest.fixture(scope="module")
def evaluated(checkpoints, test_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    args = ["--path", checkpoints[0], "--path", checkpoints[1], "--data", test_sets, "--out", out,
            "--max-len-b", "6", "--batch-size", "2", "--cpu", "--prompt-variants", "2"]
    first = evaluate(*args)
    assert first.returncode == 0, first.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    second = evaluate(*args)
    assert second.returncode == 0, second.stderr[-4000:]
    return out, first, second, results


def test_every_set_is_decoded_scored_and_written(evaluated):
    out, first, _, results = evaluated
    assert list(results) == ["a", "b"]
    sets = results["a"]["sets"]
    # train.tsv is not a test set; ii gets no prompt variants
    assert sorted(sets) == ["test_asr", "test_asr.prompt1", "test_asr.prompt2", "test_ii",
                            "test_sv", "test_sv.prompt1", "test_sv.prompt2"]
    assert {k: sets[k]["metric"] for k in ("test_asr", "test_sv", "test_ii")} == {
        "test_asr": "wer", "test_sv": "accuracy", "test_ii": "instruction_following"}
    assert all(s["n"] == 3 for s in sets.values())
    assert json.loads((out / "a" / "results.json").read_text()) == sets
    for name, summary in sets.items():
        records = [json.loads(line) for line in (out / "a" / f"{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == ["test-0", "test-1", "test-2"]
        # the score is the scoring library's on the written replies
        rescored, _ = score_set(name, summary["task"], [
            DecodedRow(r["id"], r["prompt"], r["reference"], r["hypothesis"]) for r in records])
        assert rescored["score"] == summary["score"]
    asr = [json.loads(line) for line in (out / "a" / "test_asr.jsonl").read_text().splitlines()]
    assert {"reference_normalised", "hypothesis_normalised", "score"} <= set(asr[0])
    assert "decoded 14 set(s), 0 from the cache" in first.stderr


def test_replies_are_fairseq_generates(evaluated, checkpoints, test_sets, speech_corpus, run_fairseq, tmp_path):
    out = evaluated[0]
    run_fairseq("generate", [test_sets, "--user-dir", f"{REPO}/wavllm_fairseq", "--task", "wavllm",
                             "--tokenizer-path", speech_corpus / "spm.model", "--path", checkpoints[0],
                             "--gen-subset", "test_asr", "--beam", "1", "--max-len-b", "6", "--max-tokens", "400000",
                             "--cpu", "--results-path", tmp_path], cwd=tmp_path)
    text = (tmp_path / "generate-test_asr.txt").read_text()
    generated = dict(re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", text, flags=re.M))
    ours = [json.loads(line)["hypothesis"] for line in (out / "a" / "test_asr.jsonl").read_text().splitlines()]
    assert ours == [generated[str(i)] for i in range(3)]


def test_prompt_variants_use_held_out_wordings(evaluated):
    out, _, _, results = evaluated
    pool = load_pool(DEFAULT_POOL)
    robust = results["b"]["prompt_robustness"]
    assert sorted(robust) == ["asr", "sv"]
    assert robust["sv"]["wordings"] == pool["sv"][:2] and len(robust["sv"]["scores"]) == 2
    prompts = {json.loads(line)["prompt"] for line in (out / "b" / "test_sv.prompt2.jsonl").read_text().splitlines()}
    assert prompts == {pool["sv"][1]}
    mean = sum(robust["asr"]["scores"]) / 2
    assert robust["asr"]["mean"] == pytest.approx(mean)


def test_report_and_chart(evaluated):
    out = evaluated[0]
    md = (out / "results.md").read_text()
    assert "| set | task | metric | a | b | paper |" in md
    assert re.search(r"\| test_asr \| asr \| WER % \(Whisper-normalised\) \| [\d.]+ \| [\d.]+ \| - \|", md)
    assert re.search(r"\| test_sv, 2 held-out rewordings \(mean ± sd\) \| sv \| accuracy % \| "
                     r"[\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| - \|", md)
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # library warnings and fairseq's INFO lines go to the log, not the terminal
    assert "Warning" not in evaluated[1].stderr and (out / "evaluate.log").exists()


def test_rerun_decodes_nothing(evaluated):
    out, _, second, results = evaluated
    assert "decoded 0 set(s), 14 from the cache" in second.stderr
    assert json.loads((out / "results.json").read_text()) == results


def test_cache_key_follows_decoding_options_not_batch_size(checkpoints, test_sets):
    manifest = test_sets / "test_asr.tsv"
    key = cache_key(checkpoints[0], DecodingOptions(), manifest)
    assert cache_key(checkpoints[0], DecodingOptions(batch_size=1, cpu=True), manifest) == key
    assert cache_key(checkpoints[0], DecodingOptions(beam=2), manifest) != key
    assert cache_key(checkpoints[1], DecodingOptions(), manifest) != key


def test_bad_input_is_one_line_error(test_sets, tmp_path):
    with pytest.raises(ValueError, match="no test\\*.tsv manifest in this folder"):
        find_sets([str(tmp_path)])
    rows = read_manifest(str(test_sets / "test_asr.tsv"))
    write_manifest(str(tmp_path / "test_text.tsv"), [r.__class__(r.id, r.audio, r.n_frames, r.prompt, "x", True)
                                                     for r in rows])
    with pytest.raises(ValueError, match="test_text.tsv: task 'text' \\(from the file name\\) has no metric"):
        find_sets([str(tmp_path / "test_text.tsv")])
    # more rewordings asked for than the pool has: refused before anything is decoded
    with pytest.raises(ValueError, match="--prompt-variants 9, but .*eval_prompts.json has 4 wording\\(s\\) for task asr"):
        Evaluation(str(tmp_path / "o"), DecodingOptions(), prompt_variants=9).run(
            [str(test_sets / "test_asr.tsv")], [str(test_sets / "test_asr.tsv")])
    proc = evaluate("--path", tmp_path / "missing.pt", "--data", test_sets, "--out", tmp_path / "o")
    assert proc.returncode != 0 and "missing.pt: checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr


def test_held_out_wordings_are_unseen_in_training_pools():
    import demo_corpus  # noqa: PLC0415  (examples/wavllm, on the path through pytest.ini)

    with open(os.path.join(REPO, "manifests", "prompts.json"), encoding="utf-8") as f:
        training = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    for task, wordings in load_pool(DEFAULT_POOL).items():
        seen = set(training.get(task, [])) | set(demo_corpus.PROMPTS.get(task, []))
        assert not seen & set(wordings), task
        assert len(wordings) == len(set(wordings)) >= 3


def test_batch_size_does_not_change_replies(checkpoints, test_sets):
    """Why the cache key leaves the batch size out: padding is masked, so a batch decodes as its rows one by one."""
    from wavllm_fairseq.evaluation.decode import LoadedCheckpoint, decode_manifest

    manifest = str(test_sets / "test_ii.tsv")
    one = decode_manifest(LoadedCheckpoint(str(checkpoints[1]), DecodingOptions(max_len_b=6, batch_size=1, cpu=True)),
                          manifest, "ii")
    three = decode_manifest(LoadedCheckpoint(str(checkpoints[1]), DecodingOptions(max_len_b=6, batch_size=3, cpu=True)),
                            manifest, "ii")
    assert one == three and len(one) == 3
