"""danna_sep.metrics against museval 0.4.1 (BSSEval v4) and the MDX global SDR formula.

museval is slow (≈1 s per second of 4-source audio, most of it in one dense 4096² LU per source), so the reference
runs are short: the real configuration (512 taps, 1 s frames) on 2–3 s signals, and the other configurations with
shorter filters and frames through ``museval.metrics.bss_eval``, which evaluate() wraps.
"""

import json

import numpy as np
import pytest
import torch

from danna_sep import metrics
from danna_sep.metrics import aggregate_frames, aggregate_tracks, bss_sdr, global_sdr, museval_track_json, num_frames

SR = 44100
TOL_DB = 0.01


def _museval():
    try:
        import museval
    except Exception as err:  # museval imports stempeg, which refuses to import without the ffmpeg binaries
        pytest.skip(f"museval unavailable: {err}")
    return museval


# ----------------------------------------------------------------------------------------------------------------
# test signals: (sources, channels, samples)
# ----------------------------------------------------------------------------------------------------------------
def _filter(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal FIR filter along the last axis (linear convolution, cropped to the input length)."""
    n = x.shape[-1] + len(h) - 1
    return np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[..., : x.shape[-1]]


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    """Brick-wall low-pass: nothing at all above `cutoff` Hz, like AAC-decoded MUSDB18 above 16 kHz."""
    spec = np.fft.rfft(x)
    spec[..., np.fft.rfftfreq(x.shape[-1], 1 / SR) > cutoff] = 0
    return np.fft.irfft(spec, x.shape[-1])


def _tones(rng: np.random.Generator, n: int) -> np.ndarray:
    """A stereo 'instrument': a few harmonic notes with slow envelopes over a quiet noise floor."""
    t = np.arange(n) / SR
    out = 1e-3 * rng.standard_normal((2, n))
    for _ in range(5):
        f0, amp = rng.uniform(55, 1500), rng.uniform(0.2, 1.0)
        env = np.clip(np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 6)), 0, None)
        pan = rng.uniform(0.2, 1.0, size=(2, 1))
        for h in range(1, 6):
            out += pan * amp / h * env * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6))
    return out


def make_signals(kind: str, n_src: int, seconds: float, seed: int = 0, leak: float = 0.15, noise: float = 0.1):
    """References and estimates = filtered (reference + leakage of the other sources + noise)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    if kind == "noise":
        refs = rng.standard_normal((n_src, 2, n))
    elif kind == "coloured":  # AR(1) noise of different brightness per source
        white = rng.standard_normal((n_src, 2, n))
        a = rng.uniform(0.3, 0.95, size=(n_src, 1, 1))
        w = np.exp(-2j * np.pi * np.fft.rfftfreq(n))
        refs = np.fft.irfft(np.fft.rfft(white) / (1 - a * w), n)
    elif kind == "tones":
        refs = np.stack([_tones(rng, n) for _ in range(n_src)])
    elif kind == "bandlimited":
        refs = _lowpass(rng.standard_normal((n_src, 2, n)), 16000)
    else:
        raise ValueError(kind)
    est = refs + leak * np.roll(refs, 1, axis=0) + noise * refs.std() * rng.standard_normal(refs.shape)
    h = np.zeros(24)
    h[0], h[1:] = 1.0, 0.05 * rng.standard_normal(23)
    return refs, _filter(est, h)


def _assert_same(ours, ref, metrics_names=("SDR", "ISR", "SIR", "SAR")):
    names = ("SDR", "ISR", "SIR", "SAR")
    for name, a, b in zip(names, ours, ref, strict=True):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert a.dtype == np.float64
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN frames differ")
        if name in metrics_names:
            np.testing.assert_allclose(a, b, rtol=0, atol=TOL_DB, equal_nan=True, err_msg=name)


def _museval_evaluate(refs, est, win=SR, hop=SR):
    return _museval().evaluate(refs.transpose(0, 2, 1), est.transpose(0, 2, 1), win=win, hop=hop)


def _museval_bss_eval(refs, est, win, hop, filters_len):
    sdr, isr, sir, sar, _ = _museval().metrics.bss_eval(
        refs.transpose(0, 2, 1),
        est.transpose(0, 2, 1),
        window=win,
        hop=hop,
        filters_len=filters_len,
        compute_permutation=False,
        framewise_filters=False,
        bsseval_sources_version=False,
    )
    return sdr, isr, sir, sar


# ----------------------------------------------------------------------------------------------------------------
# bss_sdr against museval
# ----------------------------------------------------------------------------------------------------------------
def test_matches_museval_evaluate_two_sources():
    refs, est = make_signals("coloured", 2, 2.0, seed=1)
    _assert_same(bss_sdr(refs, est), _museval_evaluate(refs, est))


def test_matches_museval_evaluate_four_sources_with_silences():
    # realistic stems, the real configuration (512 taps, 1 s frames, 1 s hop), silent stretches in a reference
    # (all of frame 0, part of frame 1) and in an estimate (frame 2): frames 0 and 2 are NaN for every source
    refs, est = make_signals("tones", 4, 3.1, seed=2)
    refs[1, :, : int(1.7 * SR)] = 0
    est[1, :, : int(1.7 * SR)] *= 0.01  # leakage keeps the estimate alive...
    est[3, :, 2 * SR : 3 * SR] = 0  # ...but a whole frame of this one is silent
    est[2, 0, : SR // 2] = 0  # one silent channel is not a silent frame
    ours = bss_sdr(torch.from_numpy(refs).float(), torch.from_numpy(est).float())
    ref = _museval_evaluate(refs.astype(np.float32), est.astype(np.float32))
    _assert_same(ours, ref)
    assert ours[0].shape == (4, 3)
    for values in ours:
        np.testing.assert_array_equal(np.isnan(values), np.array([[True, False, True]] * 4))


@pytest.mark.parametrize(
    "kind, n_src, seconds, win, hop, filters_len",
    [
        ("noise", 1, 1.0, 11025, 11025, 64),  # one source: no interference, SIR = +inf as in museval
        ("coloured", 2, 0.8, 8000, 5000, 128),  # overlapping frames, trailing samples left out
        ("tones", 3, 0.9, 7000, 9000, 96),  # hop > win: gaps between frames
        ("noise", 4, 0.6, 4410, 4410, 32),
        ("tones", 2, 0.5, 30000, 30000, 64),  # window longer than the signal: one frame
        ("coloured", 3, 0.7, 12345, 6789, 50),  # odd sizes
    ],
)
def test_matches_museval_bss_eval_configurations(kind, n_src, seconds, win, hop, filters_len):
    refs, est = make_signals(kind, n_src, seconds, seed=n_src + win)
    ours = bss_sdr(refs, est, win=win, hop=hop, filters_len=filters_len)
    ref = _museval_bss_eval(refs, est, win, hop, filters_len)
    _assert_same(ours, ref)
    assert ours[0].shape == (n_src, num_frames(refs.shape[-1], win, hop))
    if n_src == 1:
        assert np.isposinf(ours[2]).all()


def test_silent_frames_follow_museval_channel_sum_rule():
    # museval calls a frame silent when every channel sums to exactly zero at every sample: a stereo source with
    # R = −L is "silent" for it, a source with one zero channel is not
    refs, est = make_signals("noise", 2, 0.6, seed=5)
    refs[0, 1, 4410 : 2 * 4410] = -refs[0, 0, 4410 : 2 * 4410]
    est[1, :, 3 * 4410 : 4 * 4410] = 0
    est[0, 0, 5 * 4410 : 6 * 4410] = 0
    ours = bss_sdr(refs, est, win=4410, hop=4410, filters_len=32)
    _assert_same(ours, _museval_bss_eval(refs, est, 4410, 4410, 32))
    assert np.isnan(ours[0][:, [1, 3]]).all() and not np.isnan(ours[0][:, [0, 2, 4, 5]]).any()


def test_bandlimited_references_sdr_and_sar_match_museval():
    # nothing above 16 kHz: the Gram matrix is singular to machine precision. SDR and SAR are well defined and
    # match; museval's ISR and SIR are rounding noise there (see the module docstring), so they are not compared
    refs, est = make_signals("bandlimited", 2, 0.6, seed=3)
    ours = bss_sdr(refs, est, win=8820, hop=8820)
    _assert_same(ours, _museval_bss_eval(refs, est, 8820, 8820, 512), metrics_names=("SDR", "SAR"))
    assert np.isfinite(np.stack(ours)).all()


def test_dense_fallback_matches_museval(monkeypatch):
    # the path taken when Levinson's solution is not accurate enough, forced here on a well-conditioned problem
    monkeypatch.setattr(metrics, "_LEVINSON_BACKWARD_ERROR", -1.0)
    dense_solves = []
    solve_dense = metrics._solve_dense
    monkeypatch.setattr(metrics, "_solve_dense", lambda a, b: dense_solves.append(tuple(a.shape)) or solve_dense(a, b))
    refs, est = make_signals("coloured", 3, 0.4, seed=10)
    ours = bss_sdr(refs, est, win=4410, hop=4410, filters_len=48)
    assert dense_solves == [(1, 3 * 2 * 48, 3 * 2 * 48), (3, 2 * 48, 2 * 48)]  # all references, then each own
    _assert_same(ours, _museval_bss_eval(refs, est, 4410, 4410, 48))


def test_silent_source_over_whole_track_gives_nan():
    refs, est = make_signals("noise", 3, 0.3, seed=4)
    refs[2] = 0  # museval refuses this input; every frame is silent by its framewise rule
    out = bss_sdr(refs, est, win=4410, hop=4410, filters_len=32)
    assert all(o.shape == (3, 3) and np.isnan(o).all() for o in out)


def test_tensor_and_array_inputs_agree():
    refs, est = make_signals("coloured", 2, 0.3, seed=6)
    a = bss_sdr(refs, est, win=4410, hop=2205, filters_len=32)
    b = bss_sdr(torch.from_numpy(refs), torch.from_numpy(est), win=4410, hop=2205, filters_len=32)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_perfect_estimate_gives_infinite_sdr():
    refs, _ = make_signals("noise", 2, 0.2, seed=7)
    sdr = bss_sdr(refs, refs.copy(), win=4410, hop=4410, filters_len=16)[0]
    assert np.isposinf(sdr).all()


# ----------------------------------------------------------------------------------------------------------------
# the block-Toeplitz solver behind the filters
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch, taps, m, rhs", [(1, 40, 3, 2), (3, 17, 2, 4), (2, 64, 1, 1)])
def test_block_levinson_matches_dense_solve(batch, taps, m, rhs):
    gen = torch.Generator().manual_seed(taps)
    sig = torch.randn(batch, m, 4 * taps, generator=gen, dtype=torch.float64)
    # autocorrelation blocks of a multichannel signal: an SPD block-Toeplitz matrix
    lags = range(-(taps - 1), taps)
    r = torch.stack(
        [
            torch.stack(
                [
                    sig[b, :, max(k, 0) :] @ sig[b, :, : sig.shape[-1] - max(k, 0)].T
                    if k >= 0
                    else (sig[b, :, -k:] @ sig[b, :, : sig.shape[-1] + k].T).T
                    for k in lags
                ]
            )
            for b in range(batch)
        ]
    )
    d = torch.randn(batch, taps, m, rhs, generator=gen, dtype=torch.float64)
    dense = metrics._dense_block_toeplitz(r)
    torch.testing.assert_close(dense, dense.mT)  # R[−k] = R[k]ᵀ laid out right
    expected = torch.linalg.solve(dense, d.reshape(batch, taps * m, rhs)).reshape(d.shape)
    torch.testing.assert_close(metrics._block_levinson(r, d), expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(metrics._block_toeplitz_matmul(r, expected), d, rtol=1e-8, atol=1e-9)
    _x, ok = metrics._levinson_checked(r, d)
    assert bool(ok.all())


def test_levinson_check_rejects_singular_system():
    taps, m = 32, 2
    r = torch.zeros(1, 2 * taps - 1, m, m, dtype=torch.float64)
    r[0, taps - 1] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # rank one: singular
    d = torch.randn(1, taps, m, 1, dtype=torch.float64)
    _, ok = metrics._levinson_checked(r, d)
    assert not bool(ok.any())


# ----------------------------------------------------------------------------------------------------------------
# framing, validation
# ----------------------------------------------------------------------------------------------------------------
def test_num_frames_follows_museval_framing():
    framing = _museval().metrics.Framing
    for length, win, hop in [
        (44100 * 3, 44100, 44100),
        (44100 * 3 + 5, 44100, 44100),
        (1000, 44100, 44100),
        (44100, 44100, 44100),
        (10000, 3000, 1000),
        (10000, 3000, 4000),
    ]:
        assert num_frames(length, win, hop) == framing(win, hop, length).nwin


@pytest.mark.parametrize(
    "refs, est, match",
    [
        (np.zeros((2, 2, 100)), np.zeros((2, 2, 101)), "same shape"),
        (np.zeros((2, 100)), np.zeros((2, 100)), "must have shape"),
        (np.zeros((1, 2, 2, 100)), np.zeros((1, 2, 2, 100)), "must have shape"),
        (np.zeros((2, 2, 0)), np.zeros((2, 2, 0)), "empty"),
        (np.full((2, 2, 100), np.nan), np.zeros((2, 2, 100)), "NaN or infinite"),
        (np.zeros((2, 2, 100)), np.full((2, 2, 100), np.inf), "NaN or infinite"),
        (np.zeros((2, 2, 100), dtype=complex), np.zeros((2, 2, 100)), "real numbers"),
    ],
)
def test_bss_sdr_rejects_bad_input(refs, est, match):
    with pytest.raises(ValueError, match=match):
        bss_sdr(refs, est)


@pytest.mark.parametrize("kwargs", [{"win": 0}, {"hop": -1}, {"win": 1.5}, {"filters_len": 0}])
def test_bss_sdr_rejects_bad_framing(kwargs):
    refs, est = make_signals("noise", 2, 0.1)
    with pytest.raises(ValueError, match="positive integer"):
        bss_sdr(refs, est, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# global SDR
# ----------------------------------------------------------------------------------------------------------------
def _mdx_sdr(refs: np.ndarray, est: np.ndarray) -> np.ndarray:
    """The MDX 2021 scoring formula, written out (music_demixing.py scoring())."""
    delta = 1e-7
    num = np.sum(np.square(refs), axis=(-2, -1))
    den = np.sum(np.square(refs - est), axis=(-2, -1))
    return 10 * np.log10((num + delta) / (den + delta))


def test_global_sdr_matches_formula():
    refs, est = make_signals("tones", 4, 0.5, seed=8)
    out = global_sdr(refs, est)
    assert isinstance(out, np.ndarray) and out.shape == (4,) and out.dtype == np.float64
    np.testing.assert_allclose(out, _mdx_sdr(refs, est), rtol=1e-12)


def test_global_sdr_batched_tensor_and_silence():
    refs = torch.randn(3, 4, 2, 1000)
    est = refs + 0.1 * torch.randn_like(refs)
    refs[1, 2] = 0  # silent reference and estimate: (0 + δ) / (0 + δ) → 0 dB
    est[1, 2] = 0
    out = global_sdr(refs, est)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 4) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), _mdx_sdr(refs.double().numpy(), est.double().numpy()), rtol=1e-12)
    assert out[1, 2] == 0.0


@pytest.mark.parametrize(
    "refs, est, match",
    [
        (np.zeros((4, 2, 10)), np.zeros((4, 2, 11)), "same shape"),
        (np.zeros((2, 10)), np.zeros((2, 10)), "must have shape"),
        (np.zeros((4, 2, 0)), np.zeros((4, 2, 0)), "empty"),
    ],
)
def test_global_sdr_rejects_bad_input(refs, est, match):
    with pytest.raises(ValueError, match=match):
        global_sdr(refs, est)


# ----------------------------------------------------------------------------------------------------------------
# aggregation and museval's JSON
# ----------------------------------------------------------------------------------------------------------------
def test_aggregate_frames_is_museval_median():
    values = np.array([[1.0, np.nan, 3.0, np.inf, 2.0], [np.nan, np.nan, np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(aggregate_frames(values), [2.0, np.nan])
    np.testing.assert_array_equal(aggregate_frames(torch.tensor([4.0, 1.0, 2.0])), 2.0)
    with pytest.raises(ValueError):
        aggregate_frames(np.zeros((2, 3, 4)))


def test_aggregate_tracks_is_median_over_tracks():
    np.testing.assert_array_equal(aggregate_tracks([[1.0, 5.0], [3.0, np.nan], [2.0, 7.0]]), [2.0, 6.0])
    with pytest.raises(ValueError):
        aggregate_tracks([])
    with pytest.raises(ValueError):
        aggregate_tracks([[1.0, 2.0], [1.0]])


def test_track_json_matches_museval_trackstore_and_aggregation():
    museval = _museval()
    rng = np.random.default_rng(9)
    scores = tuple(rng.normal(5, 3, size=(2, 6)) for _ in range(4))
    scores[0][0, 1] = np.nan
    scores[2][1, 4] = np.inf
    names = ["drums", "vocals"]

    store = museval.TrackStore(track_name="t", win=1.0, hop=1.0)
    for j, name in enumerate(names):
        store.add_target(name, {k: s[j].tolist() for k, s in zip(("SDR", "ISR", "SIR", "SAR"), scores, strict=True)})
    expected = json.loads(store.json)
    ours = json.loads(json.dumps(museval_track_json(names, scores)))
    assert [t["name"] for t in ours["targets"]] == names
    for t_ours, t_ref in zip(ours["targets"], expected["targets"], strict=True):
        assert len(t_ours["frames"]) == len(t_ref["frames"])
        for f_ours, f_ref in zip(t_ours["frames"], t_ref["frames"], strict=True):
            assert (f_ours["time"], f_ours["duration"]) == (f_ref["time"], f_ref["duration"])
            for k in ("SDR", "SIR", "ISR", "SAR"):
                np.testing.assert_allclose(f_ours["metrics"][k], float(f_ref["metrics"][k]), atol=1e-9)

    # museval's median-of-frames per track, from its own data frame
    df = store.df
    for j, name in enumerate(names):
        for k, s in zip(("SDR", "ISR", "SIR", "SAR"), scores, strict=True):
            expected_median = df[(df.target == name) & (df.metric == k)].score.median()
            np.testing.assert_allclose(aggregate_frames(s)[j], expected_median, atol=1e-5)

    with pytest.raises(ValueError):
        museval_track_json(["one"], scores)
