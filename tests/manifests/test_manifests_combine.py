from manifests import combine, common, covost2
from wavllm_fairseq.data.manifest import ManifestRow, read_manifest, write_manifest


def _rows(task, items):
    return [ManifestRow(i, audio, n, f"{task} prompt {i}.", tgt, True, task=task) for i, audio, n, tgt in items]


def test_cot_from_covost_asr_and_st_of_the_same_clips(tmp_path, write_audio):
    root = tmp_path / "cv"
    for k in range(3):
        write_audio(root / "clips" / f"c{k}.wav", 1600 * (k + 1))
    (root / "covost_v2.en_de.dev.tsv").write_text(
        "path\tsentence\ttranslation\tclient_id\n"
        "c0.mp3\tGood morning.\tGuten Morgen.\tx\nc1.mp3\tThank you.\t\tx\nc2.mp3\tSee you.\tBis bald.\tx\n")
    built = covost2.main(["--root", str(root), "--splits", "dev", "--tasks", "asr", "st", "--clips-ext", "wav",
                          "--out-dir", str(tmp_path / "data"), "--quiet"])
    out = tmp_path / "data" / "dev_cot.tsv"
    result = combine.main(["--mode", "cot", "--first", built.manifests["dev_asr"],
                           "--second", built.manifests["dev_st"], "--out", str(out)])
    rows = read_manifest(str(out))
    assert [(r.id, r.audio, r.n_frames, r.tgt_text, r.task) for r in rows] == [
        ("cot-c0", ["clips/c0.wav"], 1600, "Transcript: Good morning. Translation: Guten Morgen.", "cot"),
        ("cot-c2", ["clips/c2.wav"], 4800, "Transcript: See you. Translation: Bis bald.", "cot")]
    assert all(r.prompt in common.prompt_pools()["cot"] for r in rows)
    # c1 has no translation, so its transcript row has no partner: reported, not dropped silently
    assert result.report.entries == [(f"{built.manifests['dev_asr']}:3",
                                      f"no row with the same audio in {built.manifests['dev_st']}")]


def test_ii_chains_both_prompts_and_labels_both_targets(tmp_path):
    asr, er = tmp_path / "asr.tsv", tmp_path / "er.tsv"
    write_manifest(str(asr), _rows("asr", [("u1", ["a.wav"], 100, "hello"), ("u2", ["b.wav"], 200, "bye"),
                                           ("u3", ["c.wav"], 300, "what")]))
    write_manifest(str(er), _rows("er", [("u2", ["b.wav"], 200, "sad"), ("u1", ["a.wav"], 100, "happy"),
                                         ("u1b", ["a.wav"], 100, "angry"), ("u4", ["d.wav"], 400, "neutral")]))
    result = combine.main(["--mode", "ii", "--first", str(asr), "--second", str(er), "--out",
                           str(tmp_path / "ii.tsv"), "--seed", "5"])
    rows = read_manifest(str(tmp_path / "ii.tsv"))
    assert [(r.id, r.audio, r.n_frames, r.tgt_text) for r in rows] == [
        ("ii-u1", ["a.wav"], 100, "Transcript: hello Emotion: happy"),
        ("ii-u2", ["b.wav"], 200, "Transcript: bye Emotion: sad")]
    for row in rows:
        a, b = f"asr prompt {row.id[3:]}.", f"er prompt {row.id[3:]}."
        assert row.prompt in {p.format(first=a, second=b) for p in common.prompt_pools()["ii"]}
    assert sorted(result.report.entries) == sorted([
        (f"{er}:4", "same audio as line 3; only the first is used"),
        (f"{asr}:4", f"no row with the same audio in {er}"),
        (f"{er}:5", f"no usable partner in {asr}"),
    ])


def test_id_match_with_different_audio_is_reported(tmp_path):
    first, second = tmp_path / "a.tsv", tmp_path / "b.tsv"
    write_manifest(str(first), _rows("asr", [("u1", ["a.wav"], 1, "x"), ("u2", ["b.wav"], 1, "y")]))
    write_manifest(str(second), _rows("sv", [("u1", ["z.wav"], 1, "Yes"), ("u2", ["b.wav"], 1, "No")]))
    result = combine.main(["--mode", "ii", "--first", str(first), "--second", str(second), "--out",
                           str(tmp_path / "o.tsv"), "--match", "id"])
    assert [r.tgt_text for r in read_manifest(str(tmp_path / "o.tsv"))] == ["Transcript: y Answer: No"]
    assert (f"{first}:2", f"id 'u1' has different audio in {second} line 2") in result.report.entries
    assert (f"{second}:2", f"no usable partner in {first}") in result.report.entries
