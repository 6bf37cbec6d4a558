import pytest

from manifests import common, covost2
from wavllm_fairseq.data.manifest import read_manifest

HEADER = "client_id\tpath\tsentence\ttranslation\n"  # columns in the release's order, found by name


@pytest.fixture
def cv(tmp_path, write_audio, garbage_file):
    """Common Voice clips (48 kHz mp3, as released) and a CoVoST 2 table."""
    root = tmp_path / "cv" / "en"
    lines = {
        "common_voice_en_1.mp3": ("He said \"yes\".", "Er sagte \"ja\"."),  # quotes stay as they are
        "common_voice_en_2.mp3": ("The cat sat.", "Die Katze saß."),
        "common_voice_en_3.mp3": ("Nothing here.", ""),  # empty translation: st skipped, asr kept
        "common_voice_en_4.mp3": ("Lost clip.", "Verlorener Clip."),  # clip missing
        "common_voice_en_5.mp3": ("Broken clip.", "Kaputter Clip."),
    }
    samples = {}
    for name in ("common_voice_en_1.mp3", "common_voice_en_2.mp3", "common_voice_en_3.mp3"):
        samples[name] = write_audio(root / "clips" / name, 4800 * (1 + len(samples)), 48000, format="MP3")
    garbage_file(root / "clips" / "common_voice_en_5.mp3")
    table = HEADER + "".join(f"client{i}\t{name}\t{s}\t{t}\n" for i, (name, (s, t)) in enumerate(lines.items()))
    (root / "covost_v2.en_de.dev.tsv").write_text(table, encoding="utf-8")
    return root, lines, samples


def test_st_and_asr_manifests_from_mp3_clips(cv, tmp_path, to_16k, capsys):
    root, lines, samples = cv
    out = tmp_path / "out"
    result = covost2.main(["--root", str(root), "--splits", "dev", "--tasks", "st", "asr",
                           "--out-dir", str(out), "--quiet"])
    st, asr = read_manifest(str(out / "dev_st.tsv")), read_manifest(str(out / "dev_asr.tsv"))
    assert [r.id for r in st] == ["common_voice_en_1", "common_voice_en_2"]
    assert [r.id for r in asr] == ["common_voice_en_1", "common_voice_en_2", "common_voice_en_3"]
    for row in st + asr:
        name = row.id + ".mp3"
        sentence, translation = lines[name]
        assert row.audio == [f"clips/{name}"]
        assert row.n_frames == to_16k(samples[name], 48000)
        assert row.tgt_text == (translation if row.task == "st" else sentence)
        assert row.prompt in common.prompt_pools()[row.task]
    clips = root / "clips"
    reasons = dict(result.report.entries)
    assert reasons[str(clips / "common_voice_en_3.mp3")] == "empty translation (covost_v2.en_de.dev.tsv line 4)"
    assert reasons[str(clips / "common_voice_en_4.mp3")] == "audio file not found"
    assert reasons[str(clips / "common_voice_en_5.mp3")].startswith("unreadable audio")
    assert len(result.report) == 3  # a bad clip shared by st and asr is reported once
    assert "skipped 3" in capsys.readouterr().err


def test_without_mp3_support_it_says_how_to_convert_and_reads_converted_clips(cv, tmp_path, monkeypatch,
                                                                              write_audio, to_16k):
    root, _, _ = cv
    monkeypatch.setattr(covost2, "mp3_readable", lambda: False)
    with pytest.raises(SystemExit) as e:
        covost2.main(["--root", str(root), "--splits", "dev", "--out-dir", str(tmp_path / "o"), "--quiet"])
    message = str(e.value)
    assert "cannot read mp3" in message and "libsndfile >= 1.1.0" in message
    assert "ffmpeg" in message and str(root / "clips") in message and "--clips-ext flac" in message
    assert not (tmp_path / "o").exists()

    write_audio(root / "clips" / "common_voice_en_1.flac", 1600, 16000)
    write_audio(root / "clips" / "common_voice_en_2.flac", 2205, 44100)
    result = covost2.main(["--root", str(root), "--splits", "dev", "--out-dir", str(tmp_path / "o"), "--quiet",
                           "--clips-ext", "flac"])
    rows = read_manifest(result.manifests["dev_st"])
    assert [(r.audio, r.n_frames) for r in rows] == [
        (["clips/common_voice_en_1.flac"], 1600), (["clips/common_voice_en_2.flac"], to_16k(2205, 44100))]


def test_this_soundfile_reports_mp3_support_consistently():
    import soundfile

    major, minor = (int(x) for x in soundfile.__libsndfile_version__.split(".")[:2])
    assert covost2.mp3_readable() == ((major, minor) >= (1, 1))


def test_missing_table_and_missing_columns_are_errors(cv, tmp_path):
    root, _, _ = cv
    with pytest.raises(SystemExit, match="covost_v2.en_de.train.tsv not found"):
        covost2.main(["--root", str(root), "--splits", "train", "--out-dir", str(tmp_path), "--quiet"])
    (root / "covost_v2.en_de.test.tsv").write_text("path\tsentence\nx.mp3\thi\n")
    with pytest.raises(SystemExit, match="lacks column.*translation"):
        covost2.main(["--root", str(root), "--splits", "test", "--out-dir", str(tmp_path), "--quiet"])
