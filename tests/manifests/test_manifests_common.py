import os
import re
import string

import pytest

from manifests import common
from manifests.common import Candidate, SkipReport, build_rows, draw_prompt, read_header_frames, relative_audio_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_header_frames_convert_to_16k_and_threads_agree_with_serial(tmp_path, write_audio, garbage_file, to_16k):
    files = {tmp_path / "a.wav": (4000, 8000), tmp_path / "b.flac": (44100, 44100),
             tmp_path / "c.wav": (1234, 16000), tmp_path / "d.flac": (999, 22050)}
    for path, (n, rate) in files.items():
        write_audio(path, n, rate)
    garbage_file(tmp_path / "bad.wav")
    write_audio(tmp_path / "empty.wav", 0)
    paths = [str(p) for p in files] + [str(tmp_path / n) for n in ("bad.wav", "missing.wav", "empty.wav")]
    serial = read_header_frames(paths, workers=1, quiet=True)
    parallel = read_header_frames(paths, workers=4, quiet=True)
    assert serial == parallel
    frames, errors = serial
    assert frames == {str(p): to_16k(n, rate) for p, (n, rate) in files.items()}
    assert frames[str(tmp_path / "a.wav")] == 8000 and frames[str(tmp_path / "b.flac")] == 16000
    assert "not found" in errors[str(tmp_path / "missing.wav")]
    assert "unreadable" in errors[str(tmp_path / "bad.wav")]
    assert "no samples" in errors[str(tmp_path / "empty.wav")]
    assert not any(reason.startswith(str(tmp_path)) for reason in errors.values())  # path is kept apart


def test_skip_report_counts_lists_and_writes_every_entry(tmp_path):
    report = SkipReport()
    for i in range(12):
        report.add(f"/data/{i}.wav", "audio file not found" if i % 3 else "empty transcript")
    assert len(report) == 12 and report.counts() == {"audio file not found": 8, "empty transcript": 4}
    text = report.summary(n_written=30)
    assert "wrote 30 examples, skipped 12" in text and "8 x audio file not found" in text
    assert "/data/0.wav: empty transcript" in text and "and 2 more" in text
    report.write(str(tmp_path / "s.tsv"))
    lines = (tmp_path / "s.tsv").read_text().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 13 and lines[12] == "/data/11.wav\taudio file not found"
    assert SkipReport().summary(5) == "wrote 5 examples, skipped none"


def test_prompt_drawing_is_seeded_by_key_and_uses_the_pool():
    pool = common.prompt_pools()["asr"]
    drawn = [draw_prompt("asr", f"utt{i}", seed=0) for i in range(60)]
    assert set(drawn) == set(pool)  # every paraphrase gets used
    assert drawn == [draw_prompt("asr", f"utt{i}", seed=0) for i in range(60)]
    assert drawn != [draw_prompt("asr", f"utt{i}", seed=1) for i in range(60)]
    filled = draw_prompt("sqa", "q1", 0, question="Where?", options="A. here B. there")
    assert "Where?" in filled and "A. here B. there" in filled
    with pytest.raises(ValueError, match="no prompt pool for task 'nope'"):
        draw_prompt("nope", "x", 0)


def test_prompt_pools_file_is_well_formed_and_packaged():
    pools = common.prompt_pools()
    assert {"asr", "st", "sv", "er", "sqa", "ii", "cot"} <= set(pools)
    placeholders = {"sqa": {"question", "options"}, "ii": {"first", "second"}}
    for task, pool in pools.items():
        assert len(pool) >= 3 and len(set(pool)) == len(pool), task
        for prompt in pool:
            fields = {f for _, f, _, _ in string.Formatter().parse(prompt) if f}
            assert fields == placeholders.get(task, set()), (task, prompt)
            assert "\t" not in prompt and "\n" not in prompt
    setup = open(os.path.join(REPO, "setup.py"), encoding="utf-8").read()
    assert re.search(r"package_data=\{\"manifests\": \[\"\*\.json\"\][,}]", setup)
    assert os.path.basename(common.PROMPTS_FILE) == "prompts.json"


def test_relative_paths_inside_the_root_and_absolute_outside(tmp_path):
    assert relative_audio_path(str(tmp_path / "a" / "b.wav"), str(tmp_path)) == os.path.join("a", "b.wav")
    outside = str(tmp_path.parent / "elsewhere.wav")
    assert relative_audio_path(outside, str(tmp_path)) == outside


def test_build_rows_reports_each_bad_file_once_and_duplicate_ids(tmp_path, write_audio):
    write_audio(tmp_path / "a.wav", 1600)
    write_audio(tmp_path / "b.wav", 800, 8000)
    a, b, gone = (str(tmp_path / n) for n in ("a.wav", "b.wav", "gone.wav"))
    candidates = [
        Candidate("x", [a, b], "t", "sv"), Candidate("y", [gone], "t", "asr"), Candidate("y", [gone], "t", "st"),
        Candidate("x", [a], "t", "sv"), Candidate("x", [a], "u", "asr"),
    ]
    report = SkipReport()
    rows = build_rows(candidates, str(tmp_path), seed=0, report=report, workers=2, quiet=True)
    assert [(r.id, r.task, r.audio, r.n_frames) for r in rows] == [
        ("x", "sv", ["a.wav", "b.wav"], 1600 + 1600), ("x", "asr", ["a.wav"], 1600)]
    assert report.entries == [(gone, "audio file not found"), (a, "duplicate id 'x'")]


@pytest.mark.parametrize("name", ["librispeech", "covost2", "voxceleb", "iemocap", "sqa", "from_jsonl", "from_csv",
                                  "combine"])
def test_every_script_has_help(name, capsys):
    import importlib

    module = importlib.import_module(f"manifests.{name}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    assert f"usage: python -m manifests.{name}" in capsys.readouterr().out


def test_header_speed_benchmark_runs_on_a_small_tree(capsys):
    import importlib.util

    path = os.path.join(REPO, "benchmarks", "manifest_header_speed.py")
    spec = importlib.util.spec_from_file_location("manifest_header_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--n-files", "40", "--workers", "1", "3", "--repeats", "1", "--latency-ms", "1"])
    out = capsys.readouterr().out
    assert "wrote 40 wav files" in out
    for case in ("warm cache", "cold cache", "1 ms modelled latency"):
        assert re.search(rf"{case}, workers=  3: +\d+ files/s", out), out
    assert common.audio_info_frames is bench.audio_info_frames  # the latency model is undone
