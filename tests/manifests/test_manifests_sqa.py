import json

from manifests import sqa
from wavllm_fairseq.data.manifest import read_manifest


def test_json_with_letter_and_text_answers(tmp_path, write_audio, to_16k):
    write_audio(tmp_path / "audio" / "q1.wav", 8000, 8000)
    write_audio(tmp_path / "audio" / "q2.flac", 1600)
    entries = [
        {"id": "gaokao-1", "audio": "audio/q1.wav", "question": "Where are they?",
         "options": ["At home.", "In a library.", "On a bus."], "answer": "b"},
        {"audio": "audio/q2.flac", "question": "What time is it?", "options": "Six.|Seven.|Eight.",
         "answer": "eight."},
        {"audio": "audio/q2.flac", "question": "Who calls?", "options": ["Tom", "Ann"], "answer": "Bob"},
        {"audio": "audio/q3.wav", "question": "Why?", "options": ["A", "B"], "answer": "A"},
        {"audio": "audio/q2.flac", "question": "", "options": ["x"], "answer": "A"},
    ]
    (tmp_path / "set.json").write_text(json.dumps(entries))
    out = tmp_path / "out" / "test_sqa.tsv"
    result = sqa.main(["--input", str(tmp_path / "set.json"), "--out", str(out), "--quiet"])
    first, second = read_manifest(str(out))
    assert (first.id, first.audio, first.n_frames, first.tgt_text) == (
        "gaokao-1", ["audio/q1.wav"], to_16k(8000, 8000), "B. In a library.")
    assert "Where are they?" in first.prompt and "A. At home. B. In a library. C. On a bus." in first.prompt
    assert (second.id, second.tgt_text) == ("sqa-000001", "C. Eight.")
    assert "A. Six. B. Seven. C. Eight." in second.prompt
    reasons = [reason for _, reason in result.report.entries]
    assert reasons == ["answer 'Bob' is neither a letter A-B nor one of the options",
                       "no question; needs at least 2 options, got 1", "audio file not found"]
    assert result.report.entries[1][0] == f"{tmp_path / 'set.json'} entry 4"


def test_tsv_input_with_audio_base(tmp_path, write_audio):
    write_audio(tmp_path / "wavs" / "a.wav", 3200)
    (tmp_path / "set.tsv").write_text("audio\tquestion\toptions\tanswer\n"
                                      "a.wav\tWhat colour?\tred|green|blue|black\tD\n")
    result = sqa.main(["--input", str(tmp_path / "set.tsv"), "--out", str(tmp_path / "o.tsv"), "--quiet",
                       "--audio-base", str(tmp_path / "wavs"), "--audio-root", str(tmp_path)])
    (row,) = read_manifest(result.manifests["o"])
    assert (row.audio, row.n_frames, row.tgt_text) == (["wavs/a.wav"], 3200, "D. black")
    assert result.skip_file is None and not (tmp_path / "o.skipped.tsv").exists()
