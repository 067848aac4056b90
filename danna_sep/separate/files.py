"""The files of a run: the inputs, where each one's stems go (checked and probed once, up front), what was written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import PathLike
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


def prepare_files(
    inputs: Sequence[Path], stems: Sequence[str], outdir: Path, template: str, ext: str, overwrite: bool = False
) -> tuple[list[FileJob], list[tuple[Path, DannaError]]]:
    """A :class:`FileJob` per input, its stems at ``outdir / template.format(track=, trackext=, stem=, ext=)``,
    and the inputs that cannot run, with why (their outputs exist or clash with an earlier input's, or the file
    cannot be read)."""
    jobs: list[FileJob] = []
    failures: list[tuple[Path, DannaError]] = []
    claimed: dict[Path, Path] = {}
    for path in inputs:
        track, trackext = track_name(path)
        try:
            dests = {
                stem: outdir / template.format(track=track, trackext=trackext, stem=stem, ext=ext) for stem in stems
            }
            clash = next((claimed[d] for d in dests.values() if d in claimed), None)
            if clash is not None:
                raise ConfigError(
                    f"its outputs would overwrite those of {clash}; use {{trackext}} or a folder in "
                    "--filename to tell them apart"
                )
            job = prepare_file(path, dests, overwrite)
        except DannaError as exc:
            failures.append((path, exc))
            continue
        claimed.update(dict.fromkeys(dests.values(), path))
        jobs.append(job)
    return jobs, failures


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
