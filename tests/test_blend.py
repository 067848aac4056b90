import json

import numpy as np
import pytest

from danna_sep.blend import FAST_BAG, ORIGINAL_BAG, Bag, blend_sdr, blend_statistics, fit_blend
from danna_sep.errors import ConfigError
from danna_sep.metrics import global_sdr


def _track(rng, target_weights, samples=4000):
    """References and 3 model estimates such that blending with ``target_weights`` recovers the truth exactly."""
    s = rng.standard_normal((4, 2, samples))
    a = rng.standard_normal((4, 2, samples))
    b = rng.standard_normal((4, 2, samples))
    w = np.asarray(target_weights)  # (3, 4)
    est = np.stack([s + a, s + b, s - (w[0, :, None, None] * a + w[1, :, None, None] * b) / w[2, :, None, None]])
    return s, est


def test_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    target = np.array([[0.2, 0.1, 0.3, 0.25], [0.2, 0.17, 0.2, 0.4], [0.6, 0.73, 0.5, 0.35]])
    stats = [blend_statistics(*_track(rng, target)) for _ in range(3)]
    fitted = fit_blend(stats)
    np.testing.assert_allclose(fitted.sum(0), 1.0, atol=1e-9)
    np.testing.assert_allclose(fitted, target, atol=2e-3)
    # the fitted blend is (nearly) perfect, far above the original hand-picked weights
    assert blend_sdr(stats, fitted).mean() > blend_sdr(stats, ORIGINAL_BAG.weights).mean() + 20


def test_fit_inverse_variance_weights():
    # independent noise of variances 1, 2, 4: the error-minimising weights are ∝ 1/σ²
    rng = np.random.default_rng(1)
    stats = []
    for _ in range(4):
        s = rng.standard_normal((4, 2, 20000))
        est = np.stack([s + np.sqrt(v) * rng.standard_normal(s.shape) for v in (1.0, 2.0, 4.0)])
        stats.append(blend_statistics(s, est))
    expected = np.array([1, 0.5, 0.25]) / 1.75
    np.testing.assert_allclose(fit_blend(stats), np.repeat(expected[:, None], 4, 1), atol=0.03)


def test_blend_sdr_matches_global_sdr_on_audio():
    rng = np.random.default_rng(2)
    s = rng.standard_normal((4, 2, 3000))
    est = np.stack([s + rng.standard_normal(s.shape) * k for k in (0.5, 1.0, 2.0)])
    w = ORIGINAL_BAG.weights
    blended = np.einsum("ms,msct->sct", w, est)
    np.testing.assert_allclose(blend_sdr([blend_statistics(s, est)], w)[0], global_sdr(s, blended), atol=1e-6)


def test_bag_round_trip_and_defaults(tmp_path):
    assert ORIGINAL_BAG.weights.sum(0) == pytest.approx([1, 1, 1, 1])
    assert FAST_BAG.models == ["unet", "demucs"]
    path = tmp_path / "bag.json"
    ORIGINAL_BAG.save(path)
    loaded = Bag.load(path)
    assert loaded.models == ORIGINAL_BAG.models
    np.testing.assert_allclose(loaded.weights, ORIGINAL_BAG.weights)
    np.testing.assert_allclose(loaded.column("demucs"), [0.6, 0.73, 0.5, 0.4])


@pytest.mark.parametrize(
    "content, message",
    [
        ({"models": ["xumx"], "weights": [[1, 1, 1]]}, "shape"),
        ({"models": ["xumx", "unet"], "weights": [[0.5] * 4, [0.4] * 4]}, "sum to 1"),
        ({"models": ["umx"], "weights": [[1, 1, 1, 1]]}, "unknown model"),
        ({"models": ["xumx"], "weight": [[1, 1, 1, 1]]}, "unknown key"),
        ({"models": ["xumx"]}, "missing required key 'weights'"),
        ({"models": ["xumx"], "weights": [[1, 1, 1, "x"]]}, "numbers"),
    ],
)
def test_bad_bag_files(tmp_path, content, message):
    path = tmp_path / "bag.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        Bag.load(path)


def test_unnormalized_bag_allowed_when_asked(tmp_path):
    path = tmp_path / "bag.json"
    path.write_text(json.dumps({"models": ["xumx", "unet"], "weights": [[0.5] * 4, [0.4] * 4], "normalized": False}))
    assert Bag.load(path).weights.sum() == pytest.approx(3.6)
    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        Bag.load(tmp_path / "broken.json")


def test_saved_fitted_weights_load_back(tmp_path):
    """Regression: weights rounded to 6 decimals one by one could sum to 1 ± 1.5e-6 and fail the check on loading
    (the demo's fitted bag did, for bass)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "fitted.json"
    for _ in range(200):
        weights = rng.dirichlet(np.ones(3) * 0.7, size=4).T  # (models, sources), columns on the simplex
        Bag(models=["xumx", "unet", "demucs"], weights=weights).save(path)
        loaded = Bag.load(path)
        np.testing.assert_allclose(loaded.weights, weights, atol=2e-6)
        np.testing.assert_allclose(loaded.weights.sum(0), 1.0, atol=1e-9)
