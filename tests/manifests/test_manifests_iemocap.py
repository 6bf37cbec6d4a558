import pytest

from manifests import common, iemocap
from wavllm_fairseq.data.manifest import read_manifest

# (utterance suffix, label, transcript); label None: wav without an evaluation line
UTTERANCES = [("F000", "neu", "Excuse me."), ("M000", "exc", "Yeah, great!"), ("F001", "fru", "Ugh."),
              ("M001", "ang", "Stop it."), ("F002", "sad", "I miss her."), ("M002", "hap", "Wonderful."),
              ("F003", "xxx", "Hmm."), ("M003", None, "Okay.")]


@pytest.fixture
def iemo(tmp_path, write_audio):
    """Five sessions of one improvised dialog each; session 3 is recorded at 44.1 kHz."""
    root = tmp_path / "IEMOCAP_full_release"
    frames = {}
    for session in range(1, 6):
        gender = "F" if session % 2 else "M"
        dialog = f"Ses0{session}{gender}_impro01"
        wav_dir = root / f"Session{session}" / "sentences" / "wav" / dialog
        rate = 44100 if session == 3 else 16000
        labels = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcripts = []
        for k, (suffix, label, text) in enumerate(UTTERANCES):
            utt = f"{dialog}_{suffix}"
            n = write_audio(wav_dir / f"{utt}.wav", 1000 + 100 * k, rate)
            frames[utt] = (n, rate)
            start, end = 2.0 * k, 2.0 * k + 1.5
            if label:
                labels += [f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]",
                           "C-E1:\tNeutral;\t()", ""]  # evaluator lines between entries, as released
            transcripts.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
        (wav_dir / f"._{dialog}_F000.wav").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata file
        labels.append(f"[20.0000 - 21.0000]\t{dialog}_F009\tsad\t[2.5000, 2.5000, 2.5000]")  # no wav
        emo = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        (emo / "Categorical").mkdir(parents=True)
        (emo / f"{dialog}.txt").write_text("\n".join(labels) + "\n")
        trans = root / f"Session{session}" / "dialog" / "transcriptions"
        trans.mkdir(parents=True)
        (trans / f"{dialog}.txt").write_text("\n".join(transcripts) + "\n")
    return root, frames


def test_four_classes_session_5_held_out_and_skips_counted(iemo, tmp_path, to_16k, capsys):
    root, frames = iemo
    out = tmp_path / "out"
    result = iemocap.main(["--root", str(root), "--out-dir", str(out), "--quiet"])
    train, test = read_manifest(str(out / "train_er.tsv")), read_manifest(str(out / "test_er.tsv"))
    assert {r.id[:5] for r in train} == {"Ses01", "Ses02", "Ses03", "Ses04"} and {r.id[:5] for r in test} == {"Ses05"}
    expected = {"F000": "neutral", "M000": "happy", "M001": "angry", "F002": "sad", "M002": "happy"}
    assert len(train) == 4 * 5 and len(test) == 5
    for row in train + test:
        assert row.tgt_text == expected[row.id.rsplit("_", 1)[1]]
        assert row.n_frames == to_16k(*frames[row.id])
        assert row.audio == [f"Session{row.id[4]}/sentences/wav/{row.id.rsplit('_', 1)[0]}/{row.id}.wav"]
        assert row.prompt in common.prompt_pools()["er"] and row.task == "er"
    counts = result.report.counts()
    assert counts["label 'fru' is not one of neu, hap, exc, ang, sad"] == 5
    assert counts["label 'xxx' is not one of neu, hap, exc, ang, sad"] == 5
    assert counts["no emotion label"] == 5 and counts["audio file not found"] == 5
    assert len(result.report) == 20
    missing = root / "Session2" / "sentences" / "wav" / "Ses02M_impro01" / "Ses02M_impro01_F009.wav"
    assert (str(missing), "audio file not found") in result.report.entries
    assert "skipped 20" in capsys.readouterr().err


def test_asr_rows_share_ids_and_audio_with_er_rows(iemo, tmp_path):
    root, _ = iemo
    result = iemocap.main(["--root", str(root), "--out-dir", str(tmp_path), "--quiet", "--tasks", "er", "asr",
                           "--test-sessions", "4", "5"])
    asr = {r.id: r for r in read_manifest(result.manifests["test_asr"])}
    er = read_manifest(result.manifests["test_er"])
    assert len(asr) == 2 * len(UTTERANCES) and len(er) == 2 * 5
    assert all(asr[r.id].audio == r.audio for r in er)
    texts = {suffix: text for suffix, _, text in UTTERANCES}
    assert all(r.tgt_text == texts[r.id.rsplit("_", 1)[1]] for r in asr.values())
