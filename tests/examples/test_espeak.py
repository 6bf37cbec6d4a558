import re

import numpy as np
import pytest

espeak = pytest.importorskip("espeak")


@pytest.fixture(scope="module")
def synth():
    return espeak.EspeakSynthesizer()


def _median_f0(wave: np.ndarray, sr: int = 16000) -> float:
    """Median autocorrelation pitch (70-400 Hz) over the loudest 40 ms frames."""
    frame = int(0.04 * sr)
    frames = [wave[i:i + frame] for i in range(0, len(wave) - frame, frame)]
    energy = np.array([np.sum(f ** 2) for f in frames])
    f0s = []
    for f in (frames[i] for i in np.argsort(energy)[-len(frames) // 3:]):
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[frame - 1:]
        lo, hi = sr // 400, sr // 70
        f0s.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0s))


def test_output_is_16k_float32_speech(synth):
    wave = synth.synthesize("the red cat sees a small dog")
    assert synth.sample_rate == 16000
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert 0.8 < len(wave) / 16000 < 4.0  # seven words at 175 words per minute
    assert np.sqrt(np.mean(wave ** 2)) > 0.01 and np.abs(wave).max() <= 1.0


def test_longer_text_gives_longer_audio(synth):
    short = synth.synthesize("the cat")
    long = synth.synthesize("the cat sees a small dog in the green garden today")
    assert len(long) > 2.5 * len(short)


def test_rate_changes_duration(synth):
    text = "a big dog runs to the old house"
    slow, fast = synth.synthesize(text, rate=100), synth.synthesize(text, rate=300)
    assert len(slow) > 2 * len(fast)


def test_pitch_parameter_moves_f0(synth):
    text = "we all know you are here"
    low, high = synth.synthesize(text, pitch=10), synth.synthesize(text, pitch=90)
    assert _median_f0(high) > 1.3 * _median_f0(low)


def test_voices_differ(synth):
    text = "the bird flies home"
    waves = {v: synth.synthesize(text, voice=v) for v in ["en-us", "en+m3", "en-us+f2"]}
    for a in waves:
        for b in waves:
            if a < b:
                n = min(len(waves[a]), len(waves[b]))
                assert not np.allclose(waves[a][:n], waves[b][:n], atol=1e-3), (a, b)
    assert _median_f0(waves["en-us+f2"]) > 1.3 * _median_f0(waves["en+m3"])  # female vs male variant


def test_same_request_gives_identical_samples(synth):
    first = synth.synthesize("a small fish swims", voice="en+m3", rate=160)
    synth.synthesize("something else in between", voice="en-us+f2")
    assert np.array_equal(first, synth.synthesize("a small fish swims", voice="en+m3", rate=160))


@pytest.mark.parametrize("voice, missing", [("xx-nowhere", "no language 'xx-nowhere'"),
                                            ("en+nosuchvariant", "no variant 'nosuchvariant'")])
def test_unknown_voice_is_named(synth, voice, missing):
    with pytest.raises(espeak.UnknownVoiceError, match=re.escape(voice) + ".*" + re.escape(missing)):
        synth.synthesize("hello", voice=voice)


def test_bad_arguments_are_rejected(synth):
    with pytest.raises(ValueError, match="rate"):
        synth.synthesize("hello", rate=10)
    with pytest.raises(ValueError, match="pitch"):
        synth.synthesize("hello", pitch=101)
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("  ")


def test_voice_listings():
    assert {"en-us", "en-gb-scotland"} <= set(espeak.list_languages())
    assert {"m1", "m7", "f1", "f4"} <= set(espeak.list_variants())
