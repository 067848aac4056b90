"""Blends ("bags") of models: a models × sources weight matrix, its JSON file, and fitting it to data.

A bag file is JSON::

    {"models": ["xumx", "unet", "demucs"],
     "sources": ["drums", "bass", "other", "vocals"],          # optional, this order by default
     "weights": [[0.2, 0.1, 0.0, 0.2], [0.2, 0.17, 0.5, 0.4], [0.6, 0.73, 0.5, 0.4]],
     "normalized": true}                                          # optional: columns must sum to 1

Row ``m`` holds model ``m``'s weight for each source; the blended source ``j`` is ``Σ_m w[m, j] · estimate_m[j]``.
Model names are the checkpoint roles of :data:`MODEL_FILES`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import SOURCES
from .checkpoints import MODEL_FILES, atomic_write
from .errors import ConfigError


@dataclass
class Bag:
    """A models × sources weight matrix. ``weights[m][j]``: weight of model ``models[m]`` for source ``j``."""

    models: list[str]
    weights: np.ndarray
    sources: list[str] = field(default_factory=lambda: list(SOURCES))
    normalized: bool = True

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.validate()

    def validate(self) -> None:
        where = "bag"
        unknown = [m for m in self.models if m not in MODEL_FILES]
        if unknown:
            raise ConfigError(f"{where}.models: unknown model(s) {unknown}; allowed: {sorted(MODEL_FILES)}")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"{where}.models: each model may appear once, got {self.models}")
        if list(self.sources) != list(SOURCES):
            raise ConfigError(f"{where}.sources: must be {list(SOURCES)} (this order), got {self.sources}")
        if self.weights.shape != (len(self.models), len(self.sources)):
            raise ConfigError(
                f"{where}.weights: expected one row per model and one column per source, i.e. shape "
                f"({len(self.models)}, {len(self.sources)}), got {self.weights.shape}"
            )
        if not np.all(np.isfinite(self.weights)):
            raise ConfigError(f"{where}.weights: all weights must be finite numbers")
        if self.normalized:
            if np.any(self.weights < 0):
                raise ConfigError(f'{where}.weights: negative weights need "normalized": false')
            sums = self.weights.sum(0)
            bad = [
                f"{s}={v:.9g}"
                for s, v in zip(self.sources, sums, strict=True)
                if not math.isclose(v, 1.0, abs_tol=1e-6)
            ]
            if bad:
                raise ConfigError(
                    f"{where}.weights: each source's column must sum to 1 ({', '.join(bad)}); "
                    'set "normalized": false to allow other sums'
                )

    def column(self, model: str) -> np.ndarray:
        """Weights of ``model`` per source, shape (sources,)."""
        return self.weights[self.models.index(model)]

    def to_json(self) -> dict:
        # 6 decimals keep the file readable; the rounding error of a normalized column (up to ~models·5e-7,
        # enough to fail the sum check on reading) goes to its largest weight, so every column still sums to 1
        weights = np.round(self.weights.astype(np.float64), 6)
        if self.normalized:
            top = weights.argmax(0)
            cols = np.arange(weights.shape[1])
            weights[top, cols] = np.round(weights[top, cols] + 1.0 - weights.sum(0), 6)
        return {
            "models": list(self.models),
            "sources": list(self.sources),
            "weights": [[float(w) for w in row] for row in weights],
            "normalized": self.normalized,
        }

    def save(self, path: str | Path) -> None:
        """Write the bag as JSON atomically."""
        atomic_write(path, (json.dumps(self.to_json(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> Bag:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"bag file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"bag file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"bag file {path}: expected a JSON object with 'models' and 'weights'")
        allowed = {"models", "sources", "weights", "normalized"}
        extra = sorted(set(data) - allowed)
        if extra:
            raise ConfigError(f"bag file {path}: unknown key(s) {extra}; allowed: {sorted(allowed)}")
        for key in ("models", "weights"):
            if key not in data:
                raise ConfigError(f"bag file {path}: missing required key {key!r}")
        try:
            return cls(
                models=list(data["models"]),
                weights=np.asarray(data["weights"], dtype=np.float64),
                sources=list(data.get("sources", SOURCES)),
                normalized=bool(data.get("normalized", True)),
            )
        except ConfigError as exc:
            raise ConfigError(f"bag file {path}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bag file {path}: weights must be a list of lists of numbers ({exc})") from None


# The original Danna-Sep weights (hand-picked): rows X-UMX, U-Net, Demucs; columns drums, bass, other, vocals.
ORIGINAL_BAG = Bag(
    models=["xumx", "unet", "demucs"],
    weights=np.array([[0.2, 0.1, 0.0, 0.2], [0.2, 0.17, 0.5, 0.4], [0.6, 0.73, 0.5, 0.4]]),
)
# `--fast`: X-UMX dropped, with the original fast weights.
FAST_BAG = Bag(models=["unet", "demucs"], weights=np.array([[0.4, 0.27, 0.5, 0.6], [0.6, 0.73, 0.5, 0.4]]))


# ------------------------------------------------------------------------------------------------ fitting


def blend_statistics(references: np.ndarray, estimates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sufficient statistics of one track for blending.

    ``references`` (sources, channels, samples), ``estimates`` (models, sources, channels, samples).
    Returns ``energy`` (sources,) = ‖s‖², ``cross`` (sources, models) = ⟨s, ŝ_m⟩ and
    ``gram`` (sources, models, models) = ⟨ŝ_m, ŝ_n⟩, all float64. With them the error energy of any blend
    ``w`` is ``‖s‖² − 2 w·cross + wᵀ gram w``, so fitting never touches the audio again.
    """
    r = np.asarray(references, dtype=np.float64).reshape(references.shape[0], -1)
    e = np.asarray(estimates, dtype=np.float64).reshape(estimates.shape[0], estimates.shape[1], -1)
    if e.shape[1] != r.shape[0] or e.shape[2] != r.shape[1]:
        raise ValueError(f"estimates {estimates.shape} do not match references {references.shape}")
    energy = np.einsum("sn,sn->s", r, r)
    cross = np.einsum("sn,msn->sm", r, e)
    gram = np.einsum("msn,ksn->smk", e, e)
    return energy, cross, gram


def blend_sdr(stats: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], weights: np.ndarray) -> np.ndarray:
    """Global (MDX) SDR of the blend for each track and source: array (tracks, sources).

    ``weights``: (models, sources), or (candidates, models, sources) to score many blends at once
    (then the result is (candidates, tracks, sources)).
    """
    w = np.asarray(weights, dtype=np.float64)
    single = w.ndim == 2
    w = w[None] if single else w
    out = []
    for energy, cross, gram in stats:
        err = energy[None] - 2 * np.einsum("cms,sm->cs", w, cross) + np.einsum("cms,smk,cks->cs", w, gram, w)
        out.append(10 * np.log10((energy[None] + 1e-7) / (np.maximum(err, 0) + 1e-7)))
    sdr = np.stack(out, axis=1)
    return sdr[0] if single else sdr


def _simplex_grid(models: int, step: float) -> np.ndarray:
    """All points of the probability simplex in ``models`` dimensions on a grid of ``step``: (points, models)."""
    n = round(1 / step)

    def compositions(total: int, parts: int):
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    return np.array(list(compositions(n, models)), dtype=np.float64) / n


def fit_blend(
    stats: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], step: float = 0.01, refine: bool = True
) -> np.ndarray:
    """Per-source weights on the simplex that maximise the mean over tracks of the blend's global SDR.

    Each source is fitted independently (its column of the matrix). A grid over the simplex finds the global
    region (the objective is a mean of log-quadratics, not concave in general), then a projected-gradient
    refinement polishes it below the grid step. Returns (models, sources).
    """
    models = stats[0][1].shape[1]
    sources = stats[0][0].shape[0]
    grid = _simplex_grid(models, step if models <= 4 else max(step, 0.05))  # (points, models)
    candidates = np.repeat(grid[:, :, None], sources, axis=2)  # same grid for every source column
    score = blend_sdr(stats, candidates).mean(1)  # (points, sources)
    best = grid[score.argmax(0)].T.copy()  # (models, sources)
    if refine:
        best = _refine(stats, best, step)
    return best


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each column of ``v`` (models, sources) onto the probability simplex."""
    out = np.empty_like(v)
    for j in range(v.shape[1]):
        u = np.sort(v[:, j])[::-1]
        css = np.cumsum(u) - 1
        k = np.nonzero(u - css / np.arange(1, len(u) + 1) > 0)[0][-1]
        out[:, j] = np.maximum(v[:, j] - css[k] / (k + 1), 0)
    return out


def _refine(stats, w: np.ndarray, step: float, iters: int = 200) -> np.ndarray:
    def objective(weights):
        return blend_sdr(stats, weights).mean(0)  # (sources,)

    def gradient(weights):
        g = np.zeros_like(weights)
        for energy, cross, gram in stats:
            err = energy - 2 * np.einsum("ms,sm->s", weights, cross) + np.einsum("ms,smk,ks->s", weights, gram, weights)
            derr = -2 * cross.T + 2 * np.einsum("smk,ks->ms", gram, weights)
            g += -10 / np.log(10) * derr / (np.maximum(err, 0) + 1e-7)
        return g / len(stats)

    best, best_val = w, objective(w)
    lr = np.full(w.shape[1], step)
    for _ in range(iters):
        g = gradient(best)
        norm = np.linalg.norm(g, axis=0) + 1e-12
        cand = _project_simplex(best + lr * g / norm)
        val = objective(cand)
        better = val > best_val
        best = np.where(better[None], cand, best)
        best_val = np.where(better, val, best_val)
        lr = np.where(better, lr * 1.2, lr * 0.5)
        if np.all(lr < 1e-6):
            break
    return best
