import os
import warnings

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from danna_sep import audio
from danna_sep.audio import (
    AudioInfo,
    AudioWriter,
    ClippingWarning,
    audio_info,
    load_audio,
    read_frames,
    resample,
    save_audio,
    to_stereo,
)
from danna_sep.errors import AudioError

SR = 44100
S = 0.7071067811865476


def tones(freqs, n=SR, sr=SR, amp=0.3):
    """One sine per channel → float32 (len(freqs), n)."""
    t = np.arange(n) / sr
    return np.stack([amp * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)]).astype(np.float32)


def snr_db(ref, est):
    n = min(ref.shape[-1], est.shape[-1])
    ref, est = np.asarray(ref)[..., :n], np.asarray(est)[..., :n]
    return 10 * np.log10((ref**2).sum() / ((ref - est) ** 2).sum())


def peak_hz(x, sr=SR):
    """Dominant frequency of a 1-D signal."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


def tone_amplitude(x, freq, sr=SR):
    """Amplitude of a sine at ``freq`` in ``x`` (least squares on sin/cos)."""
    t = np.arange(len(x)) / sr
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coef))


def encode_aac(path, streams, sr=SR, container_format=None, faststart=False):
    """Write ``streams`` (each (channels, samples) float32) as AAC streams with PyAV's encoder."""
    layouts = {1: "mono", 2: "stereo", 6: "5.1"}
    options = {"movflags": "faststart"} if faststart else {}  # index (moov) before the data
    with av.open(str(path), "w", format=container_format, options=options) as out:
        encoders = []
        for x in streams:
            s = out.add_stream("aac", rate=sr, layout=layouts[x.shape[0]])
            s.bit_rate = 96000 * x.shape[0]
            encoders.append(s)
        for s, x in zip(encoders, streams, strict=True):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=s.layout.name)
            frame.sample_rate, frame.pts = sr, 0
            for packet in list(s.encode(frame)) + list(s.encode(None)):
                out.mux(packet)


def assert_names(excinfo, path):
    assert str(path) in str(excinfo.value)


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "ext,subtype,atol",
    [
        ("wav", "PCM_16", 2**-15),
        ("wav", "PCM_24", 2**-23),
        ("wav", "FLOAT", 0.0),
        ("flac", "PCM_16", 2**-15),
        ("flac", "PCM_24", 2**-23),
    ],
)
def test_lossless_round_trip(tmp_path, ext, subtype, atol):
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (2, 10007)).astype(np.float32)
    path = tmp_path / f"x.{ext}"
    save_audio(path, torch.from_numpy(x), SR, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    y, rate = load_audio(path)
    assert rate == SR and y.dtype == torch.float32 and y.shape == (2, 10007)
    np.testing.assert_allclose(y.numpy(), x, atol=atol, rtol=0)
    assert audio_info(path) == AudioInfo(SR, 2, 10007, 1)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize("ext,sr", [("ogg", SR), ("mp3", SR), ("opus", 48000)])
def test_lossy_soundfile_round_trip(tmp_path, ext, sr):
    x = tones([440, 660], sr=sr)
    path = tmp_path / f"x.{ext}"
    save_audio(path, x, sr)  # PCM_16 on a lossy format means its codec
    y, rate = load_audio(path, sample_rate=None)
    assert rate == sr and y.shape == (2, x.shape[1])
    assert snr_db(x, y.numpy()) > 20


def test_m4a_round_trip(tmp_path):
    x = tones([440, 660])
    encode_aac(tmp_path / "x.m4a", [x])
    y, rate = load_audio(tmp_path / "x.m4a")
    # the mp4 edit list removes the encoder delay; AAC pads the end to a whole 1024-sample frame
    assert rate == SR and y.shape[0] == 2 and SR <= y.shape[1] < SR + 2048
    assert snr_db(x, y.numpy()) > 20
    info = audio_info(tmp_path / "x.m4a")
    assert (info.sample_rate, info.channels, info.streams) == (SR, 2, 1)
    assert abs(info.frames - SR) < 64  # mp4 durations are rounded to the movie timescale (ms)


def test_raw_aac(tmp_path):
    # ADTS has no edit list, so the encoder delay stays: compare spectra, not samples
    encode_aac(tmp_path / "x.aac", [tones([440, 660])], container_format="adts")
    y, rate = load_audio(tmp_path / "x.aac")
    assert rate == SR and y.shape[0] == 2 and y.shape[1] >= SR
    assert peak_hz(y[0].numpy()) == pytest.approx(440, abs=2)
    assert peak_hz(y[1].numpy()) == pytest.approx(660, abs=2)


@pytest.fixture(scope="module")
def stem_mp4(tmp_path_factory):
    stems = [tones([220 * (k + 1), 330 * (k + 1)], amp=0.2) for k in range(5)]
    path = tmp_path_factory.mktemp("stems") / "track.stem.mp4"
    encode_aac(path, stems)
    return path, stems


def test_stem_mp4_all_streams(stem_mp4):
    path, stems = stem_mp4
    y, rate = load_audio(path, stream=None)
    assert rate == SR and y.shape[:2] == (5, 2) and SR <= y.shape[2] < SR + 2048
    for k in range(5):
        assert snr_db(stems[k], y[k].numpy()) > 15
        one, _ = load_audio(path, stream=k)
        torch.testing.assert_close(one, y[k], rtol=0, atol=0)
    info = audio_info(path)
    assert (info.streams, info.channels, info.sample_rate) == (5, 2, SR) and abs(info.frames - SR) < 64


@pytest.mark.parametrize("stream", [5, -1])
def test_stem_mp4_bad_stream(stem_mp4, stream):
    path, _ = stem_mp4
    with pytest.raises(AudioError, match="stream") as e:
        load_audio(path, stream=stream)
    assert_names(e, path)


def test_stem_mp4_resampled(stem_mp4):
    path, _ = stem_mp4
    y, rate = load_audio(path, sample_rate=22050, stream=None)
    assert rate == SR and y.shape[:2] == (5, 2) and abs(y.shape[2] - SR // 2) <= 1024
    assert peak_hz(y[1, 0].numpy(), 22050) == pytest.approx(440, abs=2)


# ------------------------------------------------------------------------------------------- resampling


def test_resampled_on_load(tmp_path):
    x = tones([1000, 1000], n=48000, sr=48000, amp=0.5)
    save_audio(tmp_path / "x.wav", x, 48000, subtype="FLOAT")
    y, rate = load_audio(tmp_path / "x.wav")
    assert rate == 48000 and y.shape == (2, SR)
    assert peak_hz(y[0].numpy()) == pytest.approx(1000, abs=1.5)
    # compared with the same sine sampled at 44.1 kHz, away from the edges
    expected = tones([1000, 1000], n=SR, amp=0.5)
    np.testing.assert_allclose(y[:, 1000:-1000].numpy(), expected[:, 1000:-1000], atol=1e-3)
    # sample_rate=None keeps the file's rate, with the data untouched
    same, rate = load_audio(tmp_path / "x.wav", sample_rate=None)
    assert rate == 48000 and np.array_equal(same.numpy(), x)


def test_resample_any_leading_dims():
    x = torch.from_numpy(tones([500] * 6, n=4800, sr=48000)).reshape(3, 2, 4800)
    y = resample(x, 48000, 44100)
    assert y.shape == (3, 2, 4410) and y.dtype == torch.float32
    assert resample(x, 48000, 48000) is x


# ------------------------------------------------------------------------------------------- channels


def test_mono_duplicated_or_kept(tmp_path):
    x = tones([440])
    save_audio(tmp_path / "m.wav", x[0], SR, subtype="FLOAT")  # 1-D → mono file
    assert sf.info(str(tmp_path / "m.wav")).channels == 1
    y, _ = load_audio(tmp_path / "m.wav")
    assert y.shape == (2, SR) and np.array_equal(y[0].numpy(), x[0]) and np.array_equal(y[1].numpy(), x[0])
    y, _ = load_audio(tmp_path / "m.wav", stereo=False)
    assert y.shape == (1, SR)


def test_51_wav_downmix(tmp_path):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (6, 1000)).astype(np.float32)
    save_audio(tmp_path / "s.wav", x, SR, subtype="FLOAT")
    y, _ = load_audio(tmp_path / "s.wav")
    fl, fr, fc, _lfe, bl, br = x.astype(np.float64)
    norm = 1 + 2 * S  # FFmpeg-style normalisation: the largest row sum of gains becomes 1
    np.testing.assert_allclose(y[0].numpy(), (fl + S * fc + S * bl) / norm, atol=1e-6)
    np.testing.assert_allclose(y[1].numpy(), (fr + S * fc + S * br) / norm, atol=1e-6)
    kept, _ = load_audio(tmp_path / "s.wav", stereo=False)
    assert kept.shape == (6, 1000)


def test_unknown_layout_downmix(tmp_path):
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (5, 500)).astype(np.float32)
    save_audio(tmp_path / "q.flac", x, SR, subtype="PCM_24")
    y, _ = load_audio(tmp_path / "q.flac")
    np.testing.assert_allclose(y[0].numpy(), x[0::2].mean(0), atol=1e-6)
    np.testing.assert_allclose(y[1].numpy(), x[1::2].mean(0), atol=1e-6)
    # read_frames applies the same policy
    torch.testing.assert_close(read_frames(tmp_path / "q.flac", 0, 500), y)


def test_to_stereo_named_layouts():
    x = torch.rand(8, 100, dtype=torch.float64)
    y = to_stereo(x, ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"))
    norm = 1 + 3 * S
    torch.testing.assert_close(y[0], (x[0] + S * x[2] + S * x[4] + S * x[6]) / norm)
    torch.testing.assert_close(y[1], (x[1] + S * x[2] + S * x[5] + S * x[7]) / norm)
    assert y.dtype == torch.float64
    # 3.0 layout: the row sum 1 + 0.707 is normalised too
    y = to_stereo(x[:3], ("FL", "FR", "FC"))
    torch.testing.assert_close(y[0], (x[0] + S * x[2]) / (1 + S))
    # a name outside the table falls back to the even/odd rule
    y = to_stereo(x[:3], ("FL", "FR", "XYZ"))
    torch.testing.assert_close(y[0], (x[0] + x[2]) / 2)
    torch.testing.assert_close(y[1], x[1])
    torch.testing.assert_close(to_stereo(x[:1]), x[[0, 0]])


def test_51_m4a_uses_channel_names(tmp_path):
    x = np.zeros((6, SR), np.float32)
    x[2] = tones([440], amp=0.5)[0]  # FC
    x[4] = tones([660], amp=0.5)[0]  # BL
    encode_aac(tmp_path / "s.m4a", [x])
    y, _ = load_audio(tmp_path / "s.m4a")
    left, right = y[0, 2048:SR].numpy(), y[1, 2048:SR].numpy()
    gain = 0.5 * S / (1 + 2 * S)
    assert tone_amplitude(left, 440) == pytest.approx(gain, rel=0.1)
    assert tone_amplitude(right, 440) == pytest.approx(gain, rel=0.1)
    assert tone_amplitude(left, 660) == pytest.approx(gain, rel=0.1)
    assert tone_amplitude(right, 660) < 0.05 * gain


# ------------------------------------------------------------------------------------------- chunked reads


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_read_frames_matches_full_decode(tmp_path, ext):
    x = np.random.default_rng(3).uniform(-0.9, 0.9, (2, 5000)).astype(np.float32)
    path = tmp_path / f"x.{ext}"
    save_audio(path, x, SR, subtype="PCM_24")
    full, _ = load_audio(path, sample_rate=None)
    for start, frames in [(0, 5000), (1234, 100), (4990, 30), (-20, 50), (6000, 10), (0, 0)]:
        chunk = read_frames(path, start, frames)
        assert chunk.shape == (2, frames) and chunk.dtype == torch.float32
        expected = torch.zeros(2, frames)
        lo, hi = max(start, 0), min(start + frames, 5000)
        if hi > lo:
            expected[:, lo - start : hi - start] = full[:, lo:hi]
        torch.testing.assert_close(chunk, expected, rtol=0, atol=0)


def test_read_frames_mono_and_bad_calls(tmp_path):
    save_audio(tmp_path / "m.wav", tones([440])[0], SR)
    assert read_frames(tmp_path / "m.wav", 0, 10).shape == (2, 10)
    assert read_frames(tmp_path / "m.wav", 0, 10, stereo=False).shape == (1, 10)
    with pytest.raises(ValueError):
        read_frames(tmp_path / "m.wav", 0, -1)
    encode_aac(tmp_path / "x.m4a", [tones([440, 440])])
    with pytest.raises(AudioError, match="chunked reads") as e:
        read_frames(tmp_path / "x.m4a", 0, 10)
    assert_names(e, tmp_path / "x.m4a")


# ------------------------------------------------------------------------------------------- bad input


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _make(tmp_path, case):
    """Build the bad file for ``case`` → (path, expected message fragment)."""
    x = tones([440, 660])
    if case == "missing":
        return tmp_path / "nope.wav", "not found"
    if case == "directory":
        (tmp_path / "dir.wav").mkdir()
        return tmp_path / "dir.wav", "folder"
    if case == "empty":
        (tmp_path / "e.flac").write_bytes(b"")
        return tmp_path / "e.flac", "empty"
    if case == "zero-length":
        sf.write(str(tmp_path / "z.wav"), np.zeros((0, 2), np.float32), SR)
        return tmp_path / "z.wav", "no audio"
    if case == "zero-length-m4a":
        with av.open(str(tmp_path / "z.m4a"), "w") as out:
            out.add_stream("aac", rate=SR, layout="stereo")
            out.start_encoding()  # a valid mp4 whose audio track holds no sample
        return tmp_path / "z.m4a", "no audio"
    if case == "unsupported":
        (tmp_path / "notes.txt").write_text("hello")
        return tmp_path / "notes.txt", "unsupported file type '.txt'"
    if case == "garbage-wav":
        (tmp_path / "g.wav").write_bytes(b"this is not a RIFF file at all" * 20)
        return tmp_path / "g.wav", "corrupt"
    if case == "garbage-m4a":
        (tmp_path / "g.m4a").write_bytes(b"\x00\x01\x02 not an mp4" * 20)
        return tmp_path / "g.m4a", "corrupt"
    if case.startswith("truncated-"):
        ext = case.split("-")[1]
        path = tmp_path / f"t.{ext}"
        if ext == "m4a":
            encode_aac(path, [x], faststart=case.endswith("faststart"))
        else:
            save_audio(path, x, SR)
        return _truncate(path), "truncated" if ext != "m4a" else "corrupt"
    if case in ("nan", "inf"):
        x[1, 100] = np.nan if case == "nan" else np.inf
        sf.write(str(tmp_path / "n.wav"), x.T, SR, subtype="FLOAT")
        return tmp_path / "n.wav", "NaN or infinite"
    raise AssertionError(case)


BAD_CASES = [
    "missing",
    "directory",
    "empty",
    "zero-length",
    "zero-length-m4a",
    "unsupported",
    "garbage-wav",
    "garbage-m4a",
    "truncated-wav",
    "truncated-flac",
    "truncated-mp3",
    "truncated-m4a",
    "truncated-m4a-faststart",
    "nan",
    "inf",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_load_errors_name_file_and_cause(tmp_path, case):
    path, cause = _make(tmp_path, case)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert_names(e, path)
    assert cause in str(e.value)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "directory",
        "empty",
        "zero-length",
        "unsupported",
        "garbage-wav",
        "garbage-m4a",
        "truncated-wav",
        "truncated-m4a",
    ],
)
def test_info_errors(tmp_path, case):
    path, cause = _make(tmp_path, case)
    with pytest.raises(AudioError, match=cause.split("'")[0]) as e:
        audio_info(path)
    assert_names(e, path)


@pytest.mark.parametrize("case", ["missing", "empty", "zero-length", "truncated-wav", "nan"])
def test_read_frames_errors(tmp_path, case):
    path, cause = _make(tmp_path, case)
    with pytest.raises(AudioError, match=cause) as e:
        read_frames(path, 50, 100)
    assert_names(e, path)


def test_streaming_wav_placeholder_sizes_are_not_truncation(tmp_path):
    # ffmpeg/sox writing to a pipe cannot seek back: they leave 0xFFFFFFFF in the RIFF and data sizes
    x = tones([440, 660], n=1000)
    save_audio(tmp_path / "p.wav", x, SR)
    data = bytearray((tmp_path / "p.wav").read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    (tmp_path / "p.wav").write_bytes(data)
    y, _ = load_audio(tmp_path / "p.wav")
    np.testing.assert_allclose(y.numpy(), x, atol=2**-15)


def test_bad_stream_on_single_stream_file(tmp_path):
    save_audio(tmp_path / "x.wav", tones([440, 660]), SR)
    with pytest.raises(AudioError, match="stream 1") as e:
        load_audio(tmp_path / "x.wav", stream=1)
    assert_names(e, tmp_path / "x.wav")
    y, _ = load_audio(tmp_path / "x.wav", stream=None)
    assert y.shape == (1, 2, SR)


# ------------------------------------------------------------------------------------------- writing


def test_save_errors(tmp_path):
    x = tones([440, 660], n=100)
    bad = x.copy()
    bad[0, 3] = np.nan
    with pytest.raises(AudioError, match="NaN") as e:
        save_audio(tmp_path / "nan.wav", bad, SR)
    assert_names(e, tmp_path / "nan.wav")
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioError, match="folder"):
        save_audio(tmp_path / "d.wav", x, SR)
    with pytest.raises(AudioError, match="not valid for FLAC"):
        save_audio(tmp_path / "f.flac", x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="format"):
        save_audio(tmp_path / "x.xyz", x, SR)
    save_audio(tmp_path / "x.audio", x, SR, format="wav")  # explicit format wins over the extension
    assert sf.info(str(tmp_path / "x.audio")).format == "WAV"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.wav", "x.audio"]


def test_no_overwrite(tmp_path):
    path = tmp_path / "x.wav"
    save_audio(path, tones([440, 660], n=100), SR)
    old = path.read_bytes()
    with pytest.raises(AudioError, match="exists") as e:
        save_audio(path, tones([220, 330], n=100), SR, overwrite=False)
    assert_names(e, path)
    assert path.read_bytes() == old
    # a file that appears while writing is not clobbered either
    new = tmp_path / "y.wav"
    writer = AudioWriter(new, SR, 2, overwrite=False)
    writer.write(tones([440, 660], n=100))
    new.write_bytes(b"someone else's")
    with pytest.raises(AudioError, match="exists"):
        writer.close()
    assert new.read_bytes() == b"someone else's"
    save_audio(path, tones([220, 330], n=100), SR)  # overwrite=True is the default
    assert path.read_bytes() != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav", "y.wav"]


def test_creates_parent_folders_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_audio(tmp_path / "a" / "b" / "x.flac", tones([440, 660], n=100), SR)
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "b" / "x.flac").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
@pytest.mark.parametrize("existing", [False, True])
def test_crash_mid_write_leaves_no_partial_file(tmp_path, monkeypatch, interrupt, existing):
    path = tmp_path / "x.wav"
    if existing:
        save_audio(path, tones([440, 660], n=100), SR)
    old = path.read_bytes() if existing else None
    monkeypatch.setattr(audio, "_WRITE_BLOCK", 1000)
    real_write, calls = sf.SoundFile.write, []

    def failing_write(self, data):
        calls.append(len(data))
        if len(calls) == 3:  # two blocks are already in the temporary file
            raise interrupt("simulated crash")
        return real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", failing_write)
    with pytest.raises(AudioError if interrupt is OSError else KeyboardInterrupt):
        save_audio(path, tones([220, 330]), SR)
    assert len(calls) == 3
    assert (path.read_bytes() if existing else path.exists()) == (old if existing else False)
    assert [p.name for p in tmp_path.iterdir()] == (["x.wav"] if existing else [])


def test_streaming_writer(tmp_path):
    x = np.random.default_rng(4).uniform(-0.9, 0.9, (2, 3000)).astype(np.float32)
    path = tmp_path / "s.flac"
    with AudioWriter(path, SR, 2, subtype="PCM_24") as w:
        for s in range(0, 3000, 700):
            w.write(torch.from_numpy(x[:, s : s + 700]))
            assert not path.exists()  # invisible until complete
    assert w.frames_written == 3000
    y, _ = load_audio(path)
    np.testing.assert_allclose(y.numpy(), x, atol=2**-23)
    # an exception inside the block discards the file
    with pytest.raises(RuntimeError), AudioWriter(tmp_path / "t.wav", SR, 2) as w:
        w.write(x)
        raise RuntimeError("separation failed")
    assert [p.name for p in tmp_path.iterdir()] == ["s.flac"]
    with pytest.raises(ValueError), AudioWriter(tmp_path / "u.wav", SR, 2) as w:
        w.write(x[:1])
    assert [p.name for p in tmp_path.iterdir()] == ["s.flac"]


def test_clipping(tmp_path):
    x = np.array([[0.5, 1.5, -2.0, 1.0], [0.0, 0.25, -0.25, -1.0]], np.float32)
    with pytest.warns(ClippingWarning, match="clipped 2 of 8") as w:
        save_audio(tmp_path / "c.wav", x, SR)
    assert str(tmp_path / "c.wav") in str(w[0].message)
    y, _ = load_audio(tmp_path / "c.wav", sample_rate=None)
    np.testing.assert_allclose(y.numpy(), np.clip(x, -1, 1), atol=2**-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_audio(tmp_path / "f.wav", x, SR, subtype="FLOAT")  # float keeps values beyond ±1, silently
    y, _ = load_audio(tmp_path / "f.wav", sample_rate=None)
    assert np.array_equal(y.numpy(), x)
    # lossy encoders keep values beyond ±1 unless they are clipped first
    loud = tones([440, 660], n=8192, amp=3.0)
    with pytest.warns(ClippingWarning):
        save_audio(tmp_path / "c.mp3", loud, SR)
    y, _ = load_audio(tmp_path / "c.mp3", sample_rate=None)
    assert 0.9 < y.abs().max() < 1.3
