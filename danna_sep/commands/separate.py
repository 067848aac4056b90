"""``danna separate`` (= ``danna-sep``): separate songs into drums, bass, other and vocals.

Inputs are files or folders (searched recursively for audio files). Stems go to
``{outdir}/{filename}`` with the template's ``{track}`` (input name without extension), ``{trackext}``,
``{stem}`` and ``{ext}``. Existing files are never replaced without ``--force``; every file is written atomically.
A file that fails is reported and the others go on; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import string
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .. import HOP_LENGTH, SAMPLE_RATE, SOURCES, defaults
from ..errors import ConfigError, DannaError

if TYPE_CHECKING:  # the package imports torch: only inside run, so that --help stays fast
    from ..separate import FileJob

HELP = "separate songs into drums, bass, other and vocals (also available as `danna-sep`)"

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
_PLACEHOLDERS = {"track", "trackext", "stem", "ext"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="audio files (wav, flac, mp3, ogg, aiff, m4a, mp4, …) or folders to search",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "-o",
        "--outdir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for the stems (default: the current folder)",
    )
    out.add_argument(
        "--filename",
        default=DEFAULT_TEMPLATE,
        metavar="TEMPLATE",
        help="path of each stem under DIR; placeholders {track}, {trackext}, {stem}, {ext} "
        f"(default: {DEFAULT_TEMPLATE})",
    )
    out.add_argument("--stems", metavar="LIST", help=f"comma-separated subset of {','.join(SOURCES)} to write")
    out.add_argument(
        "--two-stems",
        metavar="SOURCE",
        help="write SOURCE and the sum of the others (vocals → vocals + accompaniment, "
        "other sources → SOURCE + no_SOURCE)",
    )
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--int24", action="store_true", help="24-bit integer samples (default 16-bit)")
    fmt.add_argument("--float32", action="store_true", help="32-bit float WAV (never clips)")
    out.add_argument("--flac", action="store_true", help="write FLAC instead of WAV (16- or 24-bit)")
    out.add_argument(
        "--keep-rate",
        action="store_true",
        help="write stems at the input's sample rate (default: 44100 Hz, the models' rate)",
    )
    out.add_argument("-f", "--force", action="store_true", help="overwrite existing output files")

    models = parser.add_argument_group("models")
    models.add_argument(
        "--checkpoints",
        type=Path,
        metavar="DIR",
        help="folder of the models: the released Danna-Sep files (downloaded there on first use) "
        "and their imports into danna-sep's models, or your own exports "
        f"(default: $DANNA_CHECKPOINTS, else {defaults.DEFAULT_CHECKPOINTS}; see `danna models`)",
    )
    models.add_argument(
        "--no-download",
        action="store_true",
        help="never download missing models (also: DANNA_OFFLINE=1); say what to fetch instead",
    )
    models.add_argument(
        "--released-files",
        action="store_true",
        help="run the released TorchScript/ONNX files themselves, not their imports into danna-sep's models",
    )
    models.add_argument("--fast", action="store_true", help="leave X-UMX out (U-Net + Demucs, the original fast blend)")
    models.add_argument(
        "--bag",
        type=Path,
        metavar="FILE",
        help='JSON blend: {"models": [...], "weights": models × sources}; overrides --fast',
    )

    quality = parser.add_argument_group("quality and speed")
    quality.add_argument(
        "--original",
        action="store_true",
        help="compute exactly what danna-sep 1.0.2 did (whole track in one pass, whole-song Wiener "
        "filter, 1 iteration, no shifts, the original blend): for comparisons; memory grows "
        "with the song's length",
    )
    segment_s = defaults.SPECTRAL_SEGMENT_FRAMES * HOP_LENGTH / SAMPLE_RATE
    wiener_s = defaults.WIENER_WINDOW * HOP_LENGTH / SAMPLE_RATE
    quality.add_argument(
        "--niter",
        type=int,
        default=defaults.NITER,
        metavar="N",
        help=f"Wiener EM iterations for the spectral models (default {defaults.NITER}; 0 = plain masks)",
    )
    quality.add_argument(
        "--shifts",
        type=int,
        default=defaults.SHIFTS,
        metavar="N",
        help=f"average over N random shifts of the input (better, N times slower; default {defaults.SHIFTS})",
    )
    quality.add_argument(
        "--segment",
        type=float,
        metavar="SECONDS",
        help=f"segment length for every model (default: {defaults.SPECTRAL_SEGMENT_FRAMES} frames "
        f"≈ {segment_s:.1f} s for the spectral models, "
        f"{defaults.WAVEFORM_SEGMENT_SECONDS:g} s for Demucs)",
    )
    quality.add_argument(
        "--overlap",
        type=float,
        default=defaults.OVERLAP,
        metavar="FRACTION",
        help=f"fraction of a segment cross-faded with the next (default {defaults.OVERLAP:g})",
    )
    quality.add_argument(
        "--wiener-window",
        type=int,
        default=defaults.WIENER_WINDOW,
        metavar="FRAMES",
        help=f"frames per Wiener block (default {defaults.WIENER_WINDOW} "
        f"≈ {wiener_s:.0f} s; 0 = whole track, as the original)",
    )
    quality.add_argument(
        "--no-split",
        action="store_true",
        help="run every model on the whole track at once (the original; memory grows with length)",
    )
    quality.add_argument("-d", "--device", default="auto", help="cpu, cuda, mps or auto (default)")
    quality.add_argument(
        "--parallel",
        action="store_true",
        help="CPU: run the models side by side, one core each (faster on a busy machine, more "
        "memory); default: one after the other, each using every core",
    )
    quality.add_argument(
        "-j", "--jobs", type=int, default=1, metavar="N", help="files separated in parallel (default 1)"
    )
    quality.add_argument(
        "--memory-limit",
        type=float,
        default=defaults.MEMORY_LIMIT_GIB,
        metavar="GIB",
        help="CPU: resident memory above which freed memory is given back to the system between "
        f"pieces (default {defaults.MEMORY_LIMIT_GIB:g}; 0 = never). Kept freed memory is "
        "faster, but fragments on long songs",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only errors")


# ----------------------------------------------------------------------------------------------------- options


def _check_template(template: str) -> None:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"--filename {template!r}: {exc}") from None
    unknown = fields - _PLACEHOLDERS
    if unknown:
        raise ConfigError(
            f"--filename: unknown placeholder(s) {sorted(unknown)}; use {{track}}, {{trackext}}, {{stem}}, {{ext}}"
        )
    if "stem" not in fields:
        raise ConfigError("--filename must contain {stem}, or every stem would go to the same file")


def _check_original(args: argparse.Namespace) -> None:
    """``--original`` fixes the computation: options that would change it are refused rather than ignored."""
    if not args.original:
        return
    # flag, value given, default, the original's own value (which may be given explicitly)
    changed = [
        flag
        for flag, value, default, original in (
            ("--shifts", args.shifts, defaults.SHIFTS, 1),
            ("--niter", args.niter, defaults.NITER, 1),
            ("--segment", args.segment, None, None),
            ("--overlap", args.overlap, defaults.OVERLAP, None),
            ("--wiener-window", args.wiener_window, defaults.WIENER_WINDOW, 0),
            ("--bag", args.bag, None, None),
            ("--parallel", args.parallel, False, None),
        )
        if value not in (default, original)
    ]
    if changed:
        raise ConfigError(
            f"--original computes exactly what danna-sep 1.0.2 did (whole track, whole-song Wiener "
            f"filter, 1 iteration, 1 shift, the original blend): drop {', '.join(changed)}"
        )


def _subtype(args: argparse.Namespace) -> tuple[str, str]:
    if args.flac and args.float32:
        raise ConfigError("--float32 needs WAV: FLAC stores integers only (use --int24 for FLAC)")
    subtype = "PCM_24" if args.int24 else "FLOAT" if args.float32 else "PCM_16"
    return subtype, "flac" if args.flac else "wav"


# --------------------------------------------------------------------------------------------------- progress


class _Bar:
    """One bar for the whole job, in seconds of audio, with the running files' percentages as its postfix."""

    def __init__(self, total: float, quiet: bool):
        self.lock = threading.Lock()
        self.running: dict[int, tuple[str, float]] = {}
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                unit="s",
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]{postfix}",
            )

    def update(self, key: int, name: str, fraction: float, duration: float) -> None:
        with self.lock:
            previous = self.running.get(key, (name, 0.0))[1]
            self.running[key] = (name, fraction)
            if self.bar is not None:
                self._advance(max(fraction - previous, 0.0) * duration)
                self.bar.set_postfix_str(
                    ", ".join(f"{n} {100 * f:.0f}%" for n, f in self.running.values()), refresh=False
                )

    def finish(self, key: int, duration: float) -> None:
        with self.lock:
            _, fraction = self.running.pop(key, ("", 0.0))
            if self.bar is not None:
                self._advance(max(1.0 - fraction, 0.0) * duration)

    def _advance(self, seconds: float) -> None:
        # never past the total: float sums of per-file fractions can overshoot it by a hair
        self.bar.update(min(seconds, self.bar.total - self.bar.n))

    def write(self, text: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


# -------------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from ..audio import ClippingWarning
    from ..separate import Separator, find_inputs, prepare_files, resolve_device, stem_plan

    stems = [s.strip() for s in args.stems.split(",") if s.strip()] if args.stems is not None else None
    plan = stem_plan(stems, args.two_stems)
    _check_template(args.filename)
    subtype, ext = _subtype(args)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    inputs = find_inputs(args.inputs, exclude=args.outdir)
    if not inputs:
        raise ConfigError(f"no audio files found in {', '.join(map(str, args.inputs))}")

    _check_original(args)
    device = resolve_device(args.device)
    parallel = args.parallel and device.type == "cpu"
    # inputs and outputs first: a missing input or an existing output must not wait for (or start) a download
    jobs, skipped = prepare_files(inputs, list(plan), args.outdir, args.filename, ext, overwrite=args.force)
    failures: list[tuple[Path, str]] = [(path, _message(path, exc)) for path, exc in skipped]
    if not jobs:
        return _summary(failures, inputs)
    separator = Separator.from_checkpoints(
        args.checkpoints,
        fast=args.fast,
        bag=args.bag,
        device=str(device),
        download=not args.no_download,
        imported=not args.released_files,
        notify=lambda line: print(line, file=sys.stderr),
        quiet=args.quiet,
        segment=args.segment,
        overlap=args.overlap,
        split=not args.no_split,
        niter=args.niter,
        wiener_window=args.wiener_window or None,
        shifts=args.shifts,
        parallel=parallel,
        memory_limit=args.memory_limit or None,
        original=args.original,
    )
    if not args.quiet:
        print("models: " + "; ".join(separator.describe_models()), file=sys.stderr)
    if device.type == "cpu":
        separator.share_cores(min(args.jobs, len(inputs)))

    bar = _Bar(sum(job.duration for job in jobs), args.quiet)
    for path, message in failures:
        bar.write(f"skipped {path}: {message}")

    def work(key: int, job: FileJob) -> None:
        path, duration = job.input, job.duration
        try:
            result = separator.separate_job(
                job,
                subtype=subtype,
                keep_rate=args.keep_rate,
                progress=lambda p: bar.update(key, path.name, p.fraction, duration),
            )
        except DannaError as exc:
            failures.append((path, _message(path, exc)))
            bar.write(f"failed {path}: {_message(path, exc)}")
            return
        except Exception as exc:
            failures.append((path, f"internal error ({type(exc).__name__}: {exc})"))
            bar.write(f"failed {path}: internal error ({type(exc).__name__}: {exc})")
            return
        finally:
            bar.finish(key, duration)
        folder = Path(*_common_parent(list(result.outputs.values())))
        clipped = {s: n for s, n in result.clipped.items() if n}
        note = (
            f"; clipped {', '.join(f'{n} samples in {s}' for s, n in clipped.items())} (--float32 keeps them)"
            if clipped
            else ""
        )
        if not args.quiet:
            speed = result.duration / max(result.seconds, 1e-9)
            bar.write(
                f"done {path.name} → {folder}/ ({_clock(result.duration)} of audio in "
                f"{_clock(result.seconds)}, {speed:.2f}× real time){note}"
            )
        elif note:
            bar.write(f"{path.name}{note}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClippingWarning)  # counted per file and reported in one line instead
        try:
            if args.jobs == 1 or len(jobs) == 1:
                for key, job in enumerate(jobs):
                    work(key, job)
            else:
                with ThreadPoolExecutor(args.jobs) as pool:
                    list(pool.map(work, range(len(jobs)), jobs))
        finally:
            bar.close()

    return _summary(failures, inputs)


def _summary(failures: list[tuple[Path, str]], inputs: list[Path]) -> int:
    """Exit status 1 and the list of failed files, if any failed."""
    if failures:
        print(f"danna separate: {len(failures)} of {len(inputs)} file(s) failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def _message(path: Path, exc: Exception) -> str:
    """The error's text without a leading repetition of the file name."""
    text = str(exc)
    return text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text


def _common_parent(paths: list[Path]) -> tuple[str, ...]:
    parts = [p.parent.parts for p in paths]
    common: list[str] = []
    for group in zip(*parts, strict=False):  # the common prefix: stop at the shortest
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return tuple(common) or (".",)
