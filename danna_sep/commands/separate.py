"""``danna separate`` (= ``danna-sep``): separate songs into drums, bass, other and vocals.

Inputs are files or folders (searched recursively for audio files). Stems go to
``{outdir}/{filename}`` with the template's ``{track}`` (input name without extension), ``{trackext}``,
``{stem}`` and ``{ext}``; two inputs that would write the same file stop the run before any work.

A batch can be run again: an input whose stems all exist and are complete (readable, at the rate, channel count
and length separation writes) is skipped with one line; partial or broken earlier stems fail that input. Nothing
is replaced without ``--force``; every file is written atomically and a track's stems are all written or none.
A file that fails is reported once and the others go on (a full disk stops the batch). SIGINT, SIGTERM and SIGHUP
remove the unfinished files and the folders the run created and left empty.

``--spectrograms`` draws a PNG beside each stem (``vocals.wav`` → ``vocals.png``; the web page's pictures), read
back from the written stem: the stems are streamed to disk and never whole in memory, and the picture then shows
exactly what was written. A picture is part of its track's outputs when the track is separated (drawn, or the track
fails and its new files are removed; an earlier picture of that name is replaced, since it showed a stem that is
being redone). It is not part of "complete": a skipped track keeps its stems and gets only the pictures it lacks.

Exit status: 0 when every input was separated or skipped, 1 if any failed, 2 for a usage error (nothing done),
128 + the signal's number when interrupted (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import signal
import string
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .. import HOP_LENGTH, SAMPLE_RATE, SOURCES, defaults
from ..errors import ConfigError, DannaError

if TYPE_CHECKING:  # these import torch: only inside run, so that --help and option errors answer at once
    from tqdm import tqdm

    from ..separate import FileJob, Progress
    from ..separate.files import FileResult

DESCRIPTION = "separate songs into drums, bass, other and vocals"
HELP = f"{DESCRIPTION} (also available as `danna-sep`)"

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
FLAT_TEMPLATE = "{track}_{stem}.{ext}"  # danna-sep 1.0.2's layout
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
        help="path of each stem under DIR, with {track} (input name without extension), {trackext} "
        "(its extension), {stem} (required) and {ext} (wav or flac); default "
        f"{DEFAULT_TEMPLATE}, the original's flat layout: {FLAT_TEMPLATE}".replace("%", "%%"),
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
    out.add_argument(
        "--skip-existing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip an input whose stems all exist and are complete, so that a batch can be run again "
        "(default; --no-skip-existing: count it as failed)",
    )
    out.add_argument("-f", "--force", action="store_true", help="separate every input again, replacing its stems")
    out.add_argument(
        "--spectrograms",
        action="store_true",
        help="also draw a spectrogram PNG beside each stem (vocals.wav → vocals.png); a skipped track gets the "
        "pictures it lacks (needs the plots extra: pip install 'danna-sep[plots]')",
    )

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
        metavar="FILE|original|fast",
        help='JSON blend: {"models": [...], "weights": models × sources}, or the original\'s weights by name '
        "(default: the checkpoint folder's bag.json if there is one, else original); overrides --fast",
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
        "--precision",
        choices=("fp32", "bf16"),  # danna_sep.inference.PRECISIONS (not imported here: it imports torch)
        default="fp32",
        help="what the models compute in: fp32 (default, exact) or bf16: X-UMX and the U-Net in bfloat16 "
        "(autocast; Demucs stays fp32 on CPU), about 1.65x faster each on CPUs with AVX512-BF16/AMX; lossy: "
        "SDR per source against fp32 46 dB for X-UMX, 28-34 dB for the U-Net",
    )
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
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no notes, only errors and clipping warnings"
    )


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


def _check_options(args: argparse.Namespace) -> tuple[str, str]:
    """Every check of the options that needs neither torch nor the models (the Python API checks its arguments
    again, later); returns the output ``(subtype, extension)``."""
    if args.stems is not None and args.two_stems is not None:
        raise ConfigError("choose either --stems or --two-stems, not both")
    if args.two_stems is not None and args.two_stems not in SOURCES:
        raise ConfigError(f"--two-stems: unknown source {args.two_stems!r}; choose one of {', '.join(SOURCES)}")
    if args.stems is not None:
        names = [s.strip() for s in args.stems.split(",") if s.strip()]
        unknown = [s for s in names if s not in SOURCES]
        if unknown or not names:
            raise ConfigError(f"--stems: unknown source(s) {unknown}; choose among {', '.join(SOURCES)}")
    _check_template(args.filename)
    subtype_ext = _subtype(args)
    for flag, value, ok, rule in (
        ("--jobs", args.jobs, args.jobs >= 1, ">= 1"),
        ("--shifts", args.shifts, args.shifts >= 1, ">= 1"),
        ("--niter", args.niter, args.niter >= 0, ">= 0"),
        ("--overlap", args.overlap, 0 <= args.overlap < 1, "in [0, 1)"),
        ("--segment", args.segment, args.segment is None or args.segment > 0, "> 0 seconds"),
        ("--wiener-window", args.wiener_window, args.wiener_window >= 0, ">= 0 frames (0: the whole track)"),
        ("--memory-limit", args.memory_limit, args.memory_limit >= 0, ">= 0 GiB (0: never)"),
    ):
        if not ok:
            raise ConfigError(f"{flag} must be {rule}, got {value:g}")
    _check_original(args)
    missing = [p for p in args.inputs if not p.exists()]
    if missing:
        raise ConfigError("; ".join(f"{p}: no such file or folder{_did_you_mean(p)}" for p in missing))
    if args.spectrograms:
        from ..plots import require_matplotlib  # numpy and matplotlib only: no torch

        require_matplotlib("--spectrograms")
    return subtype_ext


def _did_you_mean(path: Path) -> str:
    """`` (did you mean song.wav?)`` when ``path``'s folder holds a close name."""
    try:
        names = {p.stem: p.name for p in path.parent.iterdir()} if path.parent.is_dir() else {}
    except OSError:
        return ""
    close = difflib.get_close_matches(path.stem, list(names), n=1)  # without the extension, which all share
    return f" (did you mean {path.parent / names[close[0]]}?)" if close else ""


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
            ("--bag", args.bag, None, "original"),
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


# ---------------------------------------------------------------------------------------------------- pictures

_DRAWING = threading.Lock()  # matplotlib is not thread-safe (fonts, caches): files side by side draw in turn


def _picture_paths(outputs: dict[str, Path], ext: str) -> dict[str, Path]:
    """stem → its spectrogram PNG beside it: the stem's name with ``.png`` for its extension (``.png`` added to a
    name that does not end in ``.{ext}``, so that two stems never share a picture)."""
    return {
        stem: dest.with_suffix(".png") if dest.suffix == f".{ext}" else dest.with_name(f"{dest.name}.png")
        for stem, dest in outputs.items()
    }


def _draw(outputs: dict[str, Path], pictures: dict[str, Path], track: str, stop: threading.Event | None = None) -> int:
    """Draw ``pictures[stem]`` from each written stem ``outputs[stem]`` (titled ``stem · track``); returns how
    many were drawn. Stops (:class:`_Cancelled`) between pictures once ``stop`` is set."""
    from ..plots import spectrogram_file

    for stem, dest in outputs.items():
        if stop is not None and stop.is_set():
            raise _Cancelled
        with _DRAWING:
            spectrogram_file(dest, pictures[stem], f"{stem} · {track}", stem=stem)
    return len(outputs)


# ---------------------------------------------------------------------------------------------------- display


class _Display:
    """Everything ``danna-sep`` says on stderr while it works: one line per event (a file skipped, failed, changed
    on the way, done) and, when stderr is a terminal, one tqdm bar for the whole batch below them: the files being
    separated, the share of the batch's audio done, elapsed and remaining time. ``quiet``: only failures and
    clipping. Thread-safe (files separated side by side report from their own threads)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()
        self.lock = threading.Lock()
        self.done: list[FileResult] = []
        self.skipped = 0
        self.failed: list[Path] = []
        self.bar: tqdm | None = None
        self.running: dict[int, tuple[str, float, float]] = {}  # key → (label, duration, fraction done)
        self.started = time.perf_counter()

    def line(self, text: str, always: bool = False) -> None:
        """Print one line above the bar (``always``: even when quiet)."""
        if self.quiet and not always:
            return
        with self.lock:
            if self.bar is not None:
                self.bar.write(text, file=sys.stderr)
            else:
                print(text, file=sys.stderr, flush=True)

    def skip(self, path: Path, folder: str) -> None:
        self.skipped += 1
        self.line(f"skipped {path}: its stems exist in {folder} (--force redoes them)")

    def fail(self, path: Path, message: str) -> None:
        with self.lock:
            self.failed.append(path)
        self.line(f"failed {path}: {message}", always=True)

    def start(self, seconds: float) -> None:
        """Open the bar over ``seconds`` of audio to separate (on a terminal, unless quiet)."""
        from tqdm import tqdm

        self.started = time.perf_counter()
        if self.tty and not self.quiet:
            self.bar = tqdm(
                total=seconds,
                file=sys.stderr,
                leave=False,  # the summary line replaces it: 100 % is not printed twice
                dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
            )

    def begin(self, key: int, label: str, duration: float) -> None:
        with self.lock:
            self.running[key] = (label, duration, 0.0)
            self._refresh()

    def update(self, key: int, fraction: float) -> None:
        with self.lock:
            label, duration, previous = self.running.get(key, ("", 0.0, 0.0))
            if fraction > previous:
                self.running[key] = (label, duration, fraction)
                self._advance((fraction - previous) * duration)

    def end(self, key: int, result: FileResult | None) -> None:
        with self.lock:
            _, duration, fraction = self.running.pop(key, ("", 0.0, 0.0))
            self._advance((1.0 - fraction) * duration)
            if result is not None:
                self.done.append(result)
            self._refresh()

    def _advance(self, seconds: float) -> None:
        if self.bar is not None and seconds > 0:
            self.bar.update(min(seconds, self.bar.total - self.bar.n))  # float sums can overshoot by a hair

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_description_str(", ".join(label for label, _, _ in self.running.values()), refresh=True)

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def summary(self, prog: str) -> int:
        """The last line(s): counts, speed and peak memory (unless quiet), the failed files (always); the exit
        status (1 if any file failed, or was left when the batch stopped)."""
        self.close()
        unstarted = self.total - len(self.done) - self.skipped - len(self.failed)
        failed = len(self.failed) + unstarted
        if not self.quiet:
            counts = f"{self.total} file(s): {len(self.done)} done, {self.skipped} skipped, {failed} failed"
            if self.done:
                audio = sum(r.duration for r in self.done)
                wall = time.perf_counter() - self.started
                counts += (
                    f"; {_clock(audio)} of audio in {_clock(wall)} ({audio / max(wall, 1e-9):.2f}× real time), "
                    f"peak memory {_peak_memory()}"
                )
            print(counts, file=sys.stderr)
        if failed:
            names = ", ".join(map(str, self.failed[:10])) + (", …" if len(self.failed) > 10 else "")
            not_run = f" ({unstarted} not run: the batch stopped)" if unstarted else ""
            print(f"{prog}: {failed} of {self.total} file(s) failed{not_run}: {names}", file=sys.stderr)
            return 1
        return 0


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def _peak_memory() -> str:
    """The process's peak resident memory (and the GPU's peak allocation when CUDA was used), e.g. ``812 MB``."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    except ImportError:  # Windows
        try:
            import psutil

            info = psutil.Process().memory_info()
            peak = getattr(info, "peak_wset", info.rss)
        except ImportError:
            return "unknown"
    text = f"{peak / 1e6:.0f} MB"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        text += f" (GPU {torch.cuda.max_memory_allocated() / 1e6:.0f} MB)"
    return text


# ---------------------------------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGINT, SIGTERM, SIGHUP); ``status``: the conventional exit status, 128 + its
    number (130, 143, 129)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.status = 128 + signum
        super().__init__(signal.Signals(signum).name)


class _Cancelled(BaseException):
    """Raised in a file's progress callback when the batch stops: the separation unwinds and its writers abort."""


@contextlib.contextmanager
def _signals_raise(stop: threading.Event) -> Iterator[None]:
    """While inside: SIGINT, SIGTERM and SIGHUP (where they exist and are not ignored, as under ``nohup``) set
    ``stop`` and raise :class:`Interrupted` in the main thread, once, so that every ``finally`` and writer abort
    runs (SIGTERM's default would kill the process on the spot, leaving ``.part`` files). Later signals only set
    ``stop`` again, so that the clean-up is not itself interrupted."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        stop.set()
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _new_folders(jobs: list[FileJob]) -> list[Path]:
    """The folders the jobs' outputs need that do not exist yet, deepest first."""
    folders: set[Path] = set()
    for job in jobs:
        for dest in job.outputs.values():
            folder = dest.parent
            while not folder.exists() and folder not in folders and folder != folder.parent:
                folders.add(folder)
                folder = folder.parent
    return sorted(folders, key=lambda f: len(f.parts), reverse=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty: what a run created and left empty."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty, or gone
            folder.rmdir()


# -------------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    prog = getattr(args, "_prog", "danna-sep")
    subtype, ext = _check_options(args)  # before torch is imported: a mistake is answered at once

    from ..separate import find_inputs, stem_plan
    from ..separate.files import destinations, prepare_files

    stems = [s.strip() for s in args.stems.split(",") if s.strip()] if args.stems is not None else None
    plan = stem_plan(stems, args.two_stems)
    inputs = find_inputs(args.inputs, exclude=args.outdir)
    if not inputs:
        raise ConfigError(f"no audio files found in {', '.join(map(str, args.inputs))}")

    # inputs and outputs first: a missing input or an existing output must not wait for (or start) a download
    batch = prepare_files(
        inputs,
        list(plan),
        args.outdir,
        args.filename,
        ext,
        overwrite=args.force,
        skip_existing=args.skip_existing,
        keep_rate=args.keep_rate,
    )
    # input → stem → file: the stems (as prepare_files placed them) and their pictures
    stem_files: dict[Path, dict[str, Path]] = {}
    if args.spectrograms:
        stem_files = dict(zip(inputs, destinations(inputs, list(plan), args.outdir, args.filename, ext), strict=True))
    pictures = {p: _picture_paths(d, ext) for p, d in stem_files.items()}
    display = _Display(len(inputs), args.quiet)
    for path, folder in batch.skipped:
        if path in pictures:  # complete stems: draw only the pictures they lack (no model needed)
            missing = {s: png for s, png in pictures[path].items() if not png.exists()}
            try:
                drawn = _draw({s: stem_files[path][s] for s in missing}, missing, path.name)
            except Exception as error:
                display.fail(path, f"its stems exist in {folder}, but drawing their spectrograms failed: {error}")
                continue
            display.skip(path, folder)
            if drawn:
                display.line(f"drew {drawn} spectrogram(s) of {path.name} in {folder}")
            continue
        display.skip(path, folder)
    for path, exc in batch.failed:
        display.fail(path, _message(path, exc))
    if not batch.jobs:
        return display.summary(prog)

    stop = threading.Event()
    folders = _new_folders(batch.jobs)
    with _signals_raise(stop):
        try:
            _separate(args, batch.jobs, subtype, display, stop, pictures)
        except Interrupted as exc:
            display.close()
            done = f"{len(display.done)} of {len(batch.jobs)} file(s) separated"
            print(f"{prog}: interrupted ({exc}), {done}; unfinished stems removed", file=sys.stderr)
            return exc.status
        finally:
            display.close()
            _remove_empty(folders)
    return display.summary(prog)


def _separate(
    args: argparse.Namespace,
    jobs: list[FileJob],
    subtype: str,
    display: _Display,
    stop: threading.Event,
    pictures: dict[Path, dict[str, Path]],
) -> None:
    """Load the models and separate ``jobs`` (until ``stop`` is set: a signal, a full disk), drawing the
    ``pictures`` (input → stem → PNG) of those that have them."""
    from ..audio import ClippingWarning, DiskFullError
    from ..separate import Separator, resolve_device
    from ..separate.files import changes, common_folder, output_bytes

    device = resolve_device(args.device)
    separator = Separator.from_checkpoints(
        args.checkpoints,
        fast=args.fast,
        bag=args.bag,
        device=str(device),
        download=not args.no_download,
        imported=not args.released_files,
        notify=lambda line: display.line(line, always=True),
        quiet=args.quiet,
        segment=args.segment,
        overlap=args.overlap,
        split=not args.no_split,
        niter=args.niter,
        wiener_window=args.wiener_window or None,
        shifts=args.shifts,
        parallel=args.parallel and device.type == "cpu",
        memory_limit=args.memory_limit or None,
        original=args.original,
        precision=args.precision,
    )
    display.line("models: " + "; ".join(separator.describe_models()))
    if device.type == "cpu":
        separator.share_cores(min(args.jobs, len(jobs)))

    def work(key: int, job: FileJob) -> None:
        if stop.is_set():
            return
        path = job.input
        own_pictures = pictures.get(path, {})
        existed = {dest for dest in [*job.outputs.values(), *own_pictures.values()] if dest.exists()}

        def progress(p: Progress) -> None:
            if stop.is_set():
                raise _Cancelled
            display.update(key, p.fraction)

        display.begin(key, f"[{key + 1}/{len(jobs)}] {path.name}", job.duration)
        for note in changes(job.info, args.keep_rate):
            display.line(f"{path.name}: {note}")
        result = None
        try:
            result = separator.separate_job(job, subtype=subtype, keep_rate=args.keep_rate, progress=progress)
            if own_pictures:
                _draw(result.outputs, own_pictures, path.name, stop)
        except BaseException as exc:
            result = None
            # a track's stems (and pictures) are all written or none: remove those this job wrote before it failed
            for dest in [*job.outputs.values(), *own_pictures.values()]:
                if dest not in existed:
                    with contextlib.suppress(OSError):
                        dest.unlink()
            if isinstance(exc, DiskFullError):
                stop.set()  # the next files would fail the same way
                needed = output_bytes(job, subtype, args.keep_rate) / 1e6
                free = f", {exc.free / 1e6:.0f} MB free" if exc.free is not None else ""
                where = os.path.join(exc.path.parent, "")
                display.fail(path, f"no space left on device: {where} ({needed:.0f} MB needed{free}); stopping")
            elif isinstance(exc, DannaError):
                display.fail(path, _message(path, exc))
            elif isinstance(exc, Exception):
                display.fail(path, f"internal error ({type(exc).__name__}: {exc})")
            elif not isinstance(exc, _Cancelled):
                raise
        finally:
            display.end(key, result)
        if result is None:
            return
        folder = common_folder(list(result.outputs.values()))
        clipped = {s: n for s, n in result.clipped.items() if n}
        if clipped:
            counts = ", ".join(f"{n} samples in {s}" for s, n in clipped.items())
            display.line(f"{path.name}: clipped {counts} to ±1 ({subtype}; --float32 keeps them)", always=True)
        speed = result.duration / max(result.seconds, 1e-9)
        display.line(
            f"done {path.name} → {folder} ({_clock(result.duration)} of audio in "
            f"{_clock(result.seconds)}, {speed:.2f}× real time{', spectrograms drawn' if own_pictures else ''})"
        )

    display.start(sum(job.duration for job in jobs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClippingWarning)  # counted per file and reported in one line instead
        if args.jobs == 1 or len(jobs) == 1:
            for key, job in enumerate(jobs):
                work(key, job)
        else:
            pool = ThreadPoolExecutor(args.jobs)
            try:
                for future in [pool.submit(work, key, job) for key, job in enumerate(jobs)]:
                    future.result()
            finally:
                stop.set()  # on an interrupt the running files stop at their next segment
                pool.shutdown(wait=True, cancel_futures=True)


def _message(path: Path, exc: Exception) -> str:
    """The error's text without a leading repetition of the file name."""
    text = str(exc)
    return text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text
