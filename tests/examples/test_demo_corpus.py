import collections
import json
import os
import subprocess
import sys

import pytest
import soundfile

pytest.importorskip("espeak")
from wavllm_fairseq.data.manifest import read_manifest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "examples", "wavllm", "demo_corpus.py")
import demo_corpus  # noqa: E402  (examples/wavllm, on the path through pytest.ini)

TASKS = demo_corpus.STAGE1_TASKS + demo_corpus.STAGE2_TASKS
NAMES = [f"manifests/{split}_{task}" for split in ("train", "valid", "test") for task in TASKS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = demo_corpus.build_corpus(str(out), seed=3, size="tiny")
    manifests = {name: read_manifest(str(out / f"{name}.tsv")) for name in NAMES}
    meta = {}
    for line in (out / "meta.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        meta[record["id"]] = record
    return out, summary, manifests, meta


def _files(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs}


def test_manifests_read_back_with_audio_at_16k(corpus):
    out, summary, manifests, _ = corpus
    assert sorted(summary.manifests) == sorted(NAMES)
    tiny = demo_corpus.SIZES_BY_NAME["tiny"]
    for name in NAMES:
        split, task = name.split("/")[1].split("_")
        expected = {"train": tiny.train[task], "valid": tiny.valid, "test": tiny.test}[split]
        assert {r.task for r in manifests[name]} == {task} and len(manifests[name]) == expected
    for rows in manifests.values():
        for r in rows:
            info = soundfile.info(os.path.join(summary.audio_root, r.audio[0]))
            assert info.samplerate == 16000 and info.frames == r.n_frames and r.with_speech
            assert r.audio[0] == f"{r.task}/{r.id.split('-')[1]}/{r.id}.wav"


def test_splits_are_disjoint_and_test_voices_and_combinations_unseen(corpus):
    _, _, manifests, meta = corpus
    by_split = collections.defaultdict(set)
    for name, rows in manifests.items():
        by_split[name.split("/")[1].split("_")[0]] |= {r.id for r in rows}
    assert not by_split["train"] & by_split["valid"]
    assert not (by_split["train"] | by_split["valid"]) & by_split["test"]

    def seen(split, key):
        return {tuple(x) if isinstance(x, list) else x for i in by_split[split] for x in key(meta[i])}

    voices = lambda m: [u["voice"] for u in m["utterances"]]  # noqa: E731
    combinations = lambda m: m["combinations"]  # noqa: E731
    training = lambda key: seen("train", key) | seen("valid", key)  # noqa: E731
    assert seen("test", voices) and not seen("test", voices) & training(voices)
    assert seen("test", combinations) and not seen("test", combinations) & training(combinations)


def test_every_word_occurs_in_training_and_test_combinations():
    for animal in demo_corpus.ANIMALS:
        held = [demo_corpus.is_held_out(animal, thing) for thing in demo_corpus.THINGS]
        assert any(held) and not all(held), animal
    for thing in demo_corpus.THINGS:
        held = [demo_corpus.is_held_out(animal, thing) for animal in demo_corpus.ANIMALS]
        assert any(held) and not all(held), thing


def test_labels_are_balanced_and_consistent(corpus):
    _, _, manifests, meta = corpus
    sv = manifests["manifests/train_sv"]
    assert collections.Counter(r.tgt_text for r in sv) == {"Yes": len(sv) // 2, "No": len(sv) // 2}
    for r in sv:
        speakers = {(u["voice"], u["pitch"]) for u in meta[r.id]["utterances"]}
        assert len(meta[r.id]["utterances"]) == 2 and len(speakers) == (1 if r.tgt_text == "Yes" else 2)
        pitches = [u["pitch"] for u in meta[r.id]["utterances"]]
        if r.tgt_text == "No":  # one low-pitched and one high-pitched speaker
            (_, low_max), (high_min, _) = demo_corpus.SPEAKER_PITCH_RANGES
            assert min(pitches) <= low_max < high_min <= max(pitches)
    for r in manifests["manifests/train_rate"]:
        low, high = demo_corpus.RATE_CLASSES[r.tgt_text]
        assert low <= meta[r.id]["utterances"][0]["rate"] <= high
    places = collections.Counter()
    for r in (r for rows in manifests.values() for r in rows if r.task in ("sqa", "ii")):
        answer = r.tgt_text.split("Answer: ")[-1]
        options = r.prompt.split("Options: ")[1].rstrip(".").split(", ")
        assert len(options) == demo_corpus.N_OPTIONS and options.count(answer) == 1
        places[options.index(answer)] += 1
    assert set(places) == set(range(demo_corpus.N_OPTIONS))


def test_targets_follow_the_task_formats(corpus):
    out, _, manifests, meta = corpus
    for rows in manifests.values():
        for r in rows:
            spoken = meta[r.id]["utterances"][0]["text"]
            if r.task == "asr":
                assert r.tgt_text == spoken
            elif r.task in ("ii", "cot"):
                assert r.tgt_text.startswith(f"Transcript: {spoken} ")
    corpus_lines = set((out / "text_corpus.txt").read_text(encoding="utf-8").splitlines())
    assert {t for rows in manifests.values() for r in rows for t in (r.prompt, r.tgt_text)} <= corpus_lines


@pytest.mark.parametrize("english, german", [
    ("the small cat sees a red ball at home", "Die kleine Katze sieht einen roten Ball zu Hause"),
    ("an old dog has the white car", "Ein alter Hund hat das weiße Auto"),
    ("a tired horse needs a gray box", "Ein müdes Pferd braucht eine graue Kiste"),
])
def test_translation_follows_german_grammar(english, german):
    words = english.split()
    size = words[1] if words[1] in demo_corpus.SIZES else None
    rest = words[2 if size else 1:]
    sentence = demo_corpus.Sentence(words[0] == "the", size, rest[0], rest[1], rest[2] == "the", rest[3], rest[4],
                                    " ".join(rest[5:]) or None)
    assert sentence.english() == english and sentence.german() == german


def test_build_is_deterministic_for_any_worker_count(corpus, tmp_path):
    out, _, _, _ = corpus
    again = tmp_path / "again"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, SCRIPT, "--out", str(again), "--seed", "3", "--size", "tiny",
                    "--workers", "2", "--quiet"], check=True, env=env, cwd=str(tmp_path))
    assert _files(out) == _files(again)
    other = tmp_path / "other"
    demo_corpus.build_corpus(str(other), seed=4, size="tiny")
    assert (other / "manifests/train_asr.tsv").read_text() != (out / "manifests/train_asr.tsv").read_text()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        demo_corpus.build_corpus(str(tmp_path), size="huge")
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        demo_corpus.plan_task("dance", "train", 2, seed=0)
