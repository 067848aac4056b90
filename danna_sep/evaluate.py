"""Evaluation of single models, blends and the mixture baseline on a dataset split, with both SDR metrics.

One pass over the audio: every model separates each track once, alone (an identity blend), and its stems are cached
as float32 ``.npy`` files ``(sources, channels, samples)``::

    OUTDIR/cache/<role>-<key>/<track>.npy      key = hash of the model file (path, size, mtime), the dataset
                                                root, the split and the separator settings

Any blend is then a weighted sum of cached stems, so every single model, the original blend and a fitted blend are
scored from the same files, and ``danna fit-blend`` reuses what ``danna evaluate`` separated (and vice versa).

Scoring runs one track per process (:class:`concurrent.futures.ProcessPoolExecutor`, ``jobs`` workers; our
:func:`~danna_sep.metrics.bss_sdr` is single-threaded). Per system it gives:

* museval-compatible BSSEval v4 (1 s frames): per track the median over frames, overall the median over tracks,
  per source; "all" is the mean of the four sources' medians (as the Open-Unmix / Danna-Sep tables).
  Per-track JSON files in museval's layout: ``OUTDIR/<system>/<subset>/<track>.json``
  (``museval.EvalStore().add_eval_dir(OUTDIR/<system>)`` reads them for ``subset == "test"``).
* MDX global SDR: per track and source, overall the mean over tracks; "all" is the mean of the four.

``OUTDIR/summary.json`` holds both for every system and track.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from . import SAMPLE_RATE, SOURCES, PathLike
from .blend import Bag, blend_statistics
from .checkpoints import atomic_write
from .errors import DatasetError
from .metrics import aggregate_frames, aggregate_tracks, bss_sdr, global_sdr, museval_track_json

MIXTURE_SYSTEM = "mixture"
"""The baseline system: the mixture itself as the estimate of every source."""


# ------------------------------------------------------------------------------------------------ estimates


@dataclass(frozen=True)
class EstimateRef:
    """Where one model's (or submission's) estimates of one track are: ``kind`` ``"npy"`` (a cached
    ``(sources, channels, samples)`` array), ``"wavdir"`` (a folder ``<stem>.wav`` per source) or ``"mixture"``."""

    kind: str
    path: Path | None = None


def save_estimate(path: PathLike, stems: np.ndarray) -> None:
    """Write ``stems`` (sources, channels, samples) as float32 ``.npy`` atomically (a cache entry)."""
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(stems, dtype=np.float32)))


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis to ``length`` (estimates may differ from the reference by a few samples)."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.concatenate([x, np.zeros((*x.shape[:-1], length - x.shape[-1]), x.dtype)], -1)


def load_estimate(ref: EstimateRef, mixture: np.ndarray) -> np.ndarray:
    """The estimates ``(sources, channels, samples)`` float32 of ``ref``, fitted to ``mixture`` (channels, samples)."""
    length = mixture.shape[-1]
    if ref.kind == "mixture":
        return np.repeat(mixture[None], len(SOURCES), 0)
    if ref.path is None:
        raise ValueError(f"estimates of kind {ref.kind!r} need a path")
    if ref.kind == "npy":
        return _fit(np.load(ref.path).astype(np.float32, copy=False), length)
    if ref.kind == "wavdir":
        from .audio import load_audio, to_stereo

        out = []
        for stem in SOURCES:
            path = ref.path / f"{stem}.wav"
            if not path.is_file():
                raise DatasetError(
                    f"estimates: missing {path} (expected {{track}}/{{stem}}.wav for {', '.join(SOURCES)})"
                )
            wav, _rate = load_audio(path, SAMPLE_RATE)
            out.append(_fit(to_stereo(wav).numpy(), length))
        return np.stack(out).astype(np.float32)
    raise ValueError(f"unknown estimate kind {ref.kind!r}")


def estimates_dir_refs(directory: PathLike, tracks: Sequence) -> dict[str, EstimateRef]:
    """track name → :class:`EstimateRef` of ``directory/<track>/<stem>.wav``; every track folder must exist."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DatasetError(f"--estimates: folder {directory} does not exist (expected {{track}}/{{stem}}.wav)")
    missing = [t.name for t in tracks if not (directory / t.name).is_dir()]
    if missing:
        raise DatasetError(
            f"--estimates: {directory} has no folder for track(s) {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''} (expected {{track}}/{{stem}}.wav)"
        )
    return {t.name: EstimateRef("wavdir", directory / t.name) for t in tracks}


def cache_key(model_path: PathLike, root: PathLike, subset: str, settings: Mapping[str, Any]) -> str:
    """12 hex digits naming a model's cache folder: changes with the model file, the dataset and the settings."""
    p = Path(model_path).resolve()
    st = p.stat()
    text = json.dumps(
        [str(p), st.st_size, st.st_mtime_ns, str(Path(root).expanduser().resolve()), subset, dict(settings)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def separate_to_cache(
    models: Mapping[str, Any],
    tracks: Sequence,
    cache: PathLike,
    root: PathLike,
    subset: str,
    settings: Mapping[str, Any] | None = None,
    log=print,
    keys: Mapping[str, PathLike] | None = None,
) -> dict[str, dict[str, EstimateRef]]:
    """Separate every track with every model alone, keeping the stems in ``cache`` (reused when present).

    ``models``: role → :class:`~danna_sep.export.LoadedModel`. ``settings``: keyword arguments of
    :class:`~danna_sep.separate.Separator`. ``keys``: role → the file that identifies the model in the cache key
    (default the model's own file, ``.path``; needed for models built in memory). Returns role → track name →
    :class:`EstimateRef`.
    """
    import torch

    from .separate import Separator

    settings = dict(settings or {})
    out: dict[str, dict[str, EstimateRef]] = {}
    for role, model in models.items():
        ident = (keys or {}).get(role) or model.path
        if ident is None:
            raise ValueError(f"{role}: a model without a file needs keys[{role!r}] to name its cache")
        folder = Path(cache) / f"{role}-{cache_key(ident, root, subset, settings)}"
        # one model alone: an identity bag, so its stems are exactly what the blend weighs
        separator = Separator({role: model}, Bag([role], np.ones((1, len(SOURCES)))), **settings)
        out[role] = {}
        for k, track in enumerate(tracks):
            path = folder / f"{track.name}.npy"
            if not path.is_file():
                log(f"separating [{role}] {k + 1}/{len(tracks)} {track.name}")
                mixture = torch.from_numpy(track.read(["mixture"])[0])
                with torch.inference_mode():
                    stems = separator.separate(mixture, SAMPLE_RATE)
                save_estimate(path, torch.stack([stems[s] for s in SOURCES]).numpy())
            out[role][track.name] = EstimateRef("npy", path)
    return out


# ------------------------------------------------------------------------------------------------ scoring


@dataclass
class TrackScores:
    """One track's scores: system → ``(sdr, isr, sir, sar)`` each (sources, frames), and system → global SDR
    (sources,); ``stats``: :func:`~danna_sep.blend.blend_statistics` of the models named in the request."""

    name: str
    bss: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    global_sdr: dict[str, np.ndarray] = field(default_factory=dict)
    stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def score_track(
    track,
    refs: Mapping[str, EstimateRef],
    systems: Mapping[str, Mapping[str, np.ndarray]],
    stats_models: Sequence[str] = (),
    museval: bool = True,
) -> TrackScores:
    """Score every system on one track, loading each model's estimates once.

    ``refs``: model → :class:`EstimateRef` for this track. ``systems``: system name → {model: weights (sources,)};
    a system's estimate of source j is ``Σ_model w[j] · estimate_model[j]``. ``stats_models``: models whose blend
    statistics to return (for fitting). ``museval``: also compute BSSEval v4 (global SDR is always computed).
    """
    audio = track.read(["mixture", *SOURCES])
    mixture, references = audio[0], audio[1:]
    loaded = {m: load_estimate(refs[m], mixture) for m in refs}
    result = TrackScores(track.name)
    for name, weights in systems.items():
        est = sum(np.asarray(w, np.float32)[:, None, None] * loaded[m] for m, w in weights.items())
        result.global_sdr[name] = np.asarray(global_sdr(references, est), dtype=np.float64)
        if museval:
            result.bss[name] = bss_sdr(references, est)
    if stats_models:
        result.stats = blend_statistics(references, np.stack([loaded[m] for m in stats_models]))
    return result


def _score_star(args) -> TrackScores:
    return score_track(*args)


def score_tracks(
    tracks: Sequence,
    refs: Mapping[str, Mapping[str, EstimateRef]],
    systems: Mapping[str, Mapping[str, np.ndarray]],
    stats_models: Sequence[str] = (),
    museval: bool = True,
    jobs: int = 1,
    log=print,
) -> list[TrackScores]:
    """:func:`score_track` for every track, ``jobs`` processes at a time (1 = in this process), in track order.

    ``refs``: model → track name → :class:`EstimateRef`.
    """
    tasks = [(t, {m: r[t.name] for m, r in refs.items()}, systems, tuple(stats_models), museval) for t in tracks]
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for k, task in enumerate(tasks):
            results.append(_score_star(task))
            log(f"scored {k + 1}/{len(tasks)} {task[0].name}")
        return results
    # spawn: the parent may have run torch's thread pools, which a forked child can deadlock on
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=get_context("spawn")) as pool:
        results = []
        for k, res in enumerate(pool.map(_score_star, tasks)):
            results.append(res)
            log(f"scored {k + 1}/{len(tasks)} {res.name}")
        return results


# ------------------------------------------------------------------------------------------------ summary


def _per_source(values: np.ndarray) -> dict[str, float]:
    out = {s: float(v) for s, v in zip(SOURCES, values, strict=True)}
    out["all"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def summarize(results: Sequence[TrackScores], systems: Sequence[str], subset: str) -> dict:
    """The JSON summary: per system the museval SDR/ISR/SIR/SAR (median of frames, median of tracks) and the
    MDX global SDR (mean over tracks), per source and "all", plus each track's scores."""
    out: dict[str, Any] = {
        "subset": subset,
        "tracks": [r.name for r in results],
        "sources": list(SOURCES),
        "systems": {},
    }
    for name in systems:
        entry: dict[str, Any] = {"tracks": {}}
        g = np.stack([r.global_sdr[name] for r in results])  # (tracks, sources)
        entry["global_sdr"] = _per_source(g.mean(0))
        have_bss = all(name in r.bss for r in results)
        if have_bss:
            entry["museval"] = {}
            for k, metric in enumerate(("SDR", "ISR", "SIR", "SAR")):
                per_track = [aggregate_frames(r.bss[name][k]) for r in results]
                entry["museval"][metric] = _per_source(aggregate_tracks(per_track))
        for i, r in enumerate(results):
            t: dict[str, Any] = {"global_sdr": _per_source(g[i])}
            if have_bss:
                t["museval_sdr"] = _per_source(aggregate_frames(r.bss[name][0]))
            entry["tracks"][r.name] = t
        out["systems"][name] = entry
    return out


def write_outputs(results: Sequence[TrackScores], summary: dict, outdir: PathLike) -> Path:
    """Per-track museval JSON files (``outdir/<system>/<subset>/<track>.json``) and ``outdir/summary.json``."""
    outdir = Path(outdir)
    subset = summary["subset"]
    for r in results:
        for name, scores in r.bss.items():
            path = outdir / name / subset / f"{r.name}.json"
            atomic_write(path, json.dumps(museval_track_json(SOURCES, scores), indent=2).encode())
    path = outdir / "summary.json"
    atomic_write(path, (json.dumps(summary, indent=2) + "\n").encode())
    return path


def format_table(summary: dict) -> str:
    """A text table: one row per system, SDR per source and "all", for museval (median) and global SDR (mean)."""
    cols = [*SOURCES, "all"]
    width = max(12, *(len(n) for n in summary["systems"])) + 2
    lines = [f"{len(summary['tracks'])} track(s) of the {summary['subset']} split"]
    for key, title in (
        ("museval", "museval SDR (dB, median of frames, median of tracks)"),
        ("global_sdr", "global SDR (dB, MDX, mean over tracks)"),
    ):
        rows = [(n, s[key]["SDR"] if key == "museval" else s[key]) for n, s in summary["systems"].items() if key in s]
        if not rows:
            continue
        lines += ["", title, f"{'system':<{width}}" + "".join(f"{c:>9}" for c in cols)]
        lines += [f"{n:<{width}}" + "".join(f"{v[c]:>9.3f}" for c in cols) for n, v in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ high level


def bag_systems(bag: Bag, name: str = "blend") -> dict[str, dict[str, np.ndarray]]:
    """Systems for each model of ``bag`` alone and for the blend itself."""
    systems = {m: {m: np.ones(len(SOURCES))} for m in bag.models}
    systems[name] = {m: bag.column(m) for m in bag.models}
    return systems


def evaluate(
    tracks: Sequence,
    refs: Mapping[str, Mapping[str, EstimateRef]],
    systems: Mapping[str, Mapping[str, np.ndarray]],
    subset: str,
    outdir: PathLike | None = None,
    jobs: int = 1,
    museval: bool = True,
    with_mixture: bool = True,
    log=print,
) -> dict:
    """Score ``systems`` (name → {model: weights (sources,)}) on ``tracks``; with ``with_mixture`` also the mixture
    baseline. Writes the outputs to ``outdir`` when given; returns the summary."""
    if not tracks:
        raise DatasetError("no tracks to evaluate")
    refs = dict(refs)
    systems = dict(systems)
    if with_mixture:
        refs[MIXTURE_SYSTEM] = {t.name: EstimateRef("mixture") for t in tracks}
        systems[MIXTURE_SYSTEM] = {MIXTURE_SYSTEM: np.ones(len(SOURCES))}
    results = score_tracks(tracks, refs, systems, museval=museval, jobs=jobs, log=log)
    summary = summarize(results, list(systems), subset)
    if outdir is not None:
        write_outputs(results, summary, outdir)
    return summary


def fit_from_cache(
    tracks: Sequence,
    refs: Mapping[str, Mapping[str, EstimateRef]],
    models: Sequence[str],
    jobs: int = 1,
    step: float = 0.01,
    log=print,
) -> Bag:
    """Blend weights for ``models`` that maximise the mean global SDR over ``tracks``, from their estimates."""
    from .blend import fit_blend

    results = score_tracks(
        tracks, {m: refs[m] for m in models}, {}, stats_models=models, museval=False, jobs=jobs, log=log
    )
    stats = []
    for r in results:
        assert r.stats is not None  # score_tracks computes them for every one of stats_models
        stats.append(r.stats)
    weights = fit_blend(stats, step=step)
    weights = weights / weights.sum(0, keepdims=True)  # exact column sums for Bag's check
    return Bag(list(models), weights)
