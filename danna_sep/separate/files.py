"""The files of a run: the inputs, where each one's stems go (checked and probed once, up front), what was written."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import SAMPLE_RATE, PathLike
from ..audio import FFMPEG_EXTENSIONS, SOUNDFILE_EXTENSIONS, AudioInfo, audio_info
from ..errors import AudioError, ConfigError, DannaError
from .stems import StemPlan, plan_for


@dataclass(frozen=True)
class FileJob:
    """One input file ready to separate: its stems' ``outputs`` (stem → file, free unless ``overwrite``), their
    ``plan`` and the file's header ``info``."""

    input: Path
    outputs: dict[str, Path]
    plan: StemPlan
    info: AudioInfo
    overwrite: bool

    @property
    def duration(self) -> float:
        return self.info.duration


@dataclass(frozen=True)
class FileResult:
    """What :meth:`Separator.separate_to_files` did: the files written, samples clipped per stem (integer
    formats), the track's duration and the wall time, both in seconds."""

    input: Path
    outputs: dict[str, Path]
    clipped: dict[str, int]
    duration: float
    seconds: float


def prepare_file(path: PathLike, destinations: Mapping[str, PathLike], overwrite: bool = False) -> FileJob:
    """Check ``destinations`` (stem names, and none exists unless ``overwrite``) and read ``path``'s header.

    The writers check again when they commit (atomically), so a file that appears meanwhile is not replaced.
    """
    outputs = {name: Path(dest) for name, dest in destinations.items()}
    plan = plan_for(outputs)
    if not overwrite:
        existing = [str(d) for d in outputs.values() if d.exists()]
        if existing:
            raise AudioError(f"output exists: {', '.join(existing)} (use --force to overwrite)")
    return FileJob(Path(path), outputs, plan, audio_info(path), overwrite)


def track_name(path: Path) -> tuple[str, str]:
    """``({track}, {trackext})`` of the output template: the name without its extension (``.stem.mp4`` and
    ``.stem.m4a`` count as one) and that extension."""
    name = path.name
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix[1:]
    return path.stem, path.suffix.lstrip(".")


# ------------------------------------------------------------------------------------------------ what was done


def output_format(info: AudioInfo, keep_rate: bool = False) -> tuple[int, int, int]:
    """``(sample rate, channels, frames)`` of every stem of an input with header ``info``: 44.1 kHz (the models'
    rate) or the input's own with ``keep_rate``; mono in gives mono out, everything else stereo (as
    :meth:`Separator.separate_job` writes them)."""
    rate = info.sample_rate if keep_rate else SAMPLE_RATE
    return rate, 1 if info.channels == 1 else 2, round(info.frames * rate / info.sample_rate)


def changes(info: AudioInfo, keep_rate: bool = False) -> list[str]:
    """What separation changes about an input besides splitting it, one short phrase each: a downmix to stereo
    (more than 2 channels, :func:`danna_sep.audio.to_stereo`), the resampling to the models' 44.1 kHz (and back
    with ``keep_rate``)."""
    notes = []
    if info.channels > 2:
        notes.append(f"{info.channels} channels downmixed to stereo")
    if info.sample_rate != SAMPLE_RATE:
        rate = f"{info.sample_rate} Hz resampled to {SAMPLE_RATE} Hz for the models"
        if keep_rate:
            notes.append(f"{rate}, stems resampled back to {info.sample_rate} Hz (--keep-rate)")
        else:
            notes.append(f"{rate}; stems at {SAMPLE_RATE} Hz (--keep-rate: at {info.sample_rate} Hz)")
    return notes


def output_bytes(job: FileJob, subtype: str, keep_rate: bool = False) -> int:
    """Bytes that ``job``'s stems take as uncompressed files of ``subtype`` (an upper bound for FLAC)."""
    _, channels, frames = output_format(job.info, keep_rate)
    width = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}.get(subtype, 4)
    return len(job.outputs) * (frames * channels * width + 1024)


# ---------------------------------------------------------------------------------------------- existing outputs


def check_outputs(
    outputs: Mapping[str, Path], source: Path, info: AudioInfo, keep_rate: bool = False
) -> tuple[int, list[str]]:
    """How many of ``outputs`` (stem → file) of input ``source`` (header ``info``) exist, and what is wrong with
    the set (nothing when it is complete).

    A set of stems is complete when every file exists and is a readable audio file (header intact, data as long
    as the header says: :func:`~danna_sep.audio.audio_info`) with the sample rate and channel count separation
    would write and the input's length, to within 1 ms (plus 1 % and two AAC frames for FFmpeg inputs, whose
    decoded length their header only approximates).
    """
    rate, channels, frames = output_format(info, keep_rate)
    tolerance = max(2, rate // 1000)
    if source.suffix.lower() in FFMPEG_EXTENSIONS:
        tolerance += frames // 100 + 2 * 1024 * rate // info.sample_rate
    present = 0
    problems: list[str] = []
    for path in outputs.values():
        if not path.exists():
            problems.append(f"{path.name} missing")
            continue
        present += 1
        try:
            got = audio_info(path)
        except AudioError as exc:
            problems.append(f"{path.name} {str(exc).removeprefix(f'{os.fspath(path)}: ')}")
            continue
        if got.sample_rate != rate:
            problems.append(f"{path.name} at {got.sample_rate} Hz, not {rate} Hz")
        elif got.channels != channels:
            problems.append(f"{path.name} has {got.channels} channel(s), not {channels}")
        elif abs(got.frames - frames) > tolerance:
            problems.append(f"{path.name} lasts {got.frames / rate:.3f} s, the input {frames / rate:.3f} s")
    return present, problems


# ------------------------------------------------------------------------------------------------------ batches


@dataclass(frozen=True)
class FileBatch:
    """The inputs of a run, sorted out before any separation: ``jobs`` to run, ``skipped`` inputs whose stems
    all exist and are complete (with the folder that holds them), and ``failed`` ones (unreadable, or earlier
    outputs in the way)."""

    jobs: list[FileJob]
    skipped: list[tuple[Path, str]]
    failed: list[tuple[Path, DannaError]]


def destinations(
    inputs: Sequence[Path], stems: Sequence[str], outdir: Path, template: str, ext: str
) -> list[dict[str, Path]]:
    """Each input's stems: ``{stem: outdir / template.format(track=, trackext=, stem=, ext=)}``.

    Raises:
        ConfigError: two inputs whose stems would go to the same file (``a/song.wav`` and ``b/song.wav`` under
            ``{track}/{stem}.{ext}``), naming both; or a stem that would replace an input.
    """
    claimed: dict[str, Path] = {}
    sources = {_key(p): p for p in inputs}
    out: list[dict[str, Path]] = []
    for path in inputs:
        track, trackext = track_name(path)
        dests = {stem: outdir / template.format(track=track, trackext=trackext, stem=stem, ext=ext) for stem in stems}
        for dest in dests.values():
            key = _key(dest)
            other = claimed.get(key)
            if other is not None:
                hint = (
                    "put {trackext} in --filename"
                    if track_name(other)[1] != trackext
                    else "separate them in two runs with different --outdir"
                )
                raise ConfigError(f"{other} and {path} would both write {dest}: {hint}")
            if key in sources:
                raise ConfigError(f"the stems of {path} would replace the input {sources[key]}: change --filename")
            claimed[key] = path
        out.append(dests)
    return out


def _key(path: Path) -> str:
    """A path's identity for collisions: absolute, normalised (``a/../b`` is ``b``), case-folded where file
    systems usually ignore case (Windows, macOS)."""
    key = os.path.normpath(os.path.abspath(path))
    return key.lower() if sys.platform in ("win32", "darwin") else key


def prepare_files(
    inputs: Sequence[Path],
    stems: Sequence[str],
    outdir: Path,
    template: str,
    ext: str,
    overwrite: bool = False,
    *,
    skip_existing: bool = True,
    keep_rate: bool = False,
) -> FileBatch:
    """Sort out a run's inputs before any work: their stems at :func:`destinations` (a collision raises
    :class:`~danna_sep.errors.ConfigError`), each input's header read once.

    An input whose stems all exist and are complete (:func:`check_outputs`) is skipped (``skip_existing``) or
    fails; one whose stems partly exist, or exist but are broken or do not match the input, fails. ``overwrite``
    runs every readable input whatever exists. Nothing is replaced unasked.
    """
    batch = FileBatch([], [], [])
    for path, dests in zip(inputs, destinations(inputs, stems, outdir, template, ext), strict=True):
        try:
            info = audio_info(path)
            present, problems = (0, []) if overwrite else check_outputs(dests, path, info, keep_rate)
            folder = common_folder(list(dests.values()))
            if present and not problems and skip_existing:
                batch.skipped.append((path, folder))
                continue
            if present and not problems:
                raise AudioError(f"{path}: its stems exist in {folder} (--force redoes them)")
            if present:
                raise AudioError(
                    f"{path}: earlier stems in {folder} are incomplete ({'; '.join(problems)}); --force redoes them"
                )
            batch.jobs.append(FileJob(path, dests, plan_for(dests), info, overwrite))
        except DannaError as exc:
            batch.failed.append((path, exc))
    return batch


def common_folder(paths: list[Path]) -> str:
    """The folder that holds all of ``paths``, as ``dir/``."""
    common = os.path.commonpath([os.fspath(p.parent) for p in paths]) if paths else ""
    return os.path.join(common or ".", "")


def find_inputs(paths: list[Path], exclude: Path | None = None) -> list[Path]:
    """Files as given, folders searched recursively for audio files (sorted; hidden files and anything inside
    ``exclude``, the output folder, are skipped). Missing paths are kept, to be reported as failures."""
    extensions = set(SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS)
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path)
            if not f.is_file() or f.suffix.lower() not in extensions or any(p.startswith(".") for p in rel.parts):
                continue
            if skip is not None and skip != path.resolve() and skip in f.resolve().parents:
                continue
            found.append(f)
    unique: dict[Path, None] = {}
    for f in found:
        unique.setdefault(f, None)
    return list(unique)
