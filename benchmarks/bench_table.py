"""Issue 19's one table: every separation mode, the PyPI Demucs-48 peer and the original 1.0.2 pipeline, run side
by side on one song in one run, then the issue's goals as measured ratios, then one training step per model against
the peer's Demucs-48 step. ``make bench`` runs this script (after installing the peers).

Every row runs in its own process (``bench_separate.measure``: its peak RSS is its own, sampled every 0.1 s):

- rows of ``bench_separate.py`` (our eager models at the shipped configs' full sizes, random weights; the PyPI
  ``demucs.demucs.Demucs(channels=48)`` through ``demucs.apply.apply_model``): the time starts once the models
  are built;
- rows of ``bench_released.py`` (files built like the release, full size, random weights, in
  ``.bench/released-full``, and their imports into our models; the original danna-sep 1.0.2 pipeline on them):
  the time includes loading the models, as a user's command does.

Speed does not depend on the weights' values, so random weights time what the released models would. Each row's
stems are compared with its reference row's (SDR per stem, dB): fast variants and ``--fast`` against ours at the
defaults in fp32, the ``--original`` preset against the 1.0.2 pipeline, the imports against the released files.
Times are the minimum of ``--repeat`` rounds (each round runs every row once, in list order).

The training table: per model, one step of the trainer (full config, CPU, fp32, forward + loss + backward +
optimizer step) at the config's batch size and chunk length, timed after one warm-up step, against the same step
(same batch, chunk and L1 loss as our Demucs' config) of the PyPI Demucs-48 in a plain loop.

    .venv/bin/python benchmarks/bench_table.py [--seconds 58] [--threads 2] [--repeat 1] [--rows ID,...]
                                               [--skip ID,...] [--train-batch N] [--no-train] [--list]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts, also when imported by the tests
from bench_separate import make_song, measure

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCES = ("drums", "bass", "other", "vocals")  # danna_sep.SOURCES, spelled here so the pure parts need no torch
PEER = "pypi-demucs"  # the row every time is divided by: the Demucs-48 (depth 6, 2-layer BiLSTM)
ORIGINAL = "original-1.0.2"
DEFAULT_CACHE = REPO / ".bench" / "released-full"


@dataclass(frozen=True)
class Row:
    """One separation run: ``script``'s child ``mode`` with ``extra`` arguments; its stems are compared with those
    of the row ``reference`` (an id) when there is one."""

    id: str
    label: str
    script: str  # "separate" (bench_separate.py) or "released" (bench_released.py)
    mode: str
    reference: str | None = None
    extra: tuple[str, ...] = ()
    requires: str | None = None  # a Separator keyword the row needs: left out (and said so) where it is missing


# The separation rows, in the order they run. A new separator option (precision, compile, …) is one more row:
# Row("ours-NAME", "…", "separate", "ours", reference="ours", extra=("--option=KEY=VALUE",)), its SDR then being
# measured against ours at the defaults in fp32; the same with script "released" and reference "default-imported"
# for the imported released weights.
SEPARATION_ROWS: list[Row] = [
    Row("ours", "ours, defaults (X-UMX + U-Net + Demucs, eager, fp32)", "separate", "ours"),
    Row("ours-fast", "ours, `--fast` (U-Net + Demucs)", "separate", "ours-fast", reference="ours"),
    Row("ours-xumx", "ours, X-UMX alone", "separate", "ours-xumx"),
    Row("ours-unet", "ours, U-Net alone", "separate", "ours-unet"),
    Row("ours-demucs", "ours, Demucs alone", "separate", "ours-demucs"),
    Row(PEER, "PyPI Demucs-48 (`apply_model`, 10 s chunks, depth 6, 2-layer BiLSTM)", "separate", "demucs-lstm2"),
    Row(ORIGINAL, "danna-sep 1.0.2 pipeline, release files (TorchScript + ONNX)", "released", "original"),
    Row("preset-released", "`--original`, release files", "released", "preset-released", reference=ORIGINAL),
    Row("preset-imported", "`--original`, imported into our models", "released", "preset-imported", reference=ORIGINAL),
    Row("default-released", "defaults, release files (`--released-files`)", "released", "default-released", ORIGINAL),
    Row(
        "default-imported",
        "defaults, imported into our models (`danna-sep`)",
        "released",
        "default-imported",
        reference="default-released",
    ),
    # CPU inference precision (`danna-sep --precision bf16`): lossy, so its SDR against fp32 is shown; on CPU it
    # changes X-UMX only (U-Net and Demucs stay fp32), so `--fast --precision bf16` is `--fast` and has no row
    *(
        Row(
            f"{base}-bf16", f"{what}, `--precision bf16`", script, mode, base, ("--option=precision=bf16",), "precision"
        )
        for base, what, script, mode in [
            ("ours", "ours, defaults", "separate", "ours"),
            ("default-imported", "defaults, imported", "released", "default-imported"),
        ]
    ),
]
# Rows that exist but are left out of the default run (``--rows`` names them): the PyPI class's own defaults, the
# no-split, whole-song-Wiener mode of our eager models (the preset rows above are the exact original-equivalent
# mode) and the threaded mode.
EXTRA_ROWS: list[Row] = [
    Row("pypi-demucs-v3", "PyPI Demucs-48, class defaults (no BiLSTM, DConv attention)", "separate", "demucs"),
    Row("ours-onepass", "ours, every model on the whole song, whole-song Wiener", "separate", "original", "ours"),
    Row("ours-parallel", "ours, `--parallel` (a thread per model)", "separate", "ours-parallel", reference="ours"),
]


@dataclass(frozen=True)
class TrainRow:
    """One training step: ``model``'s trainer, or the peer in a plain loop with that trainer's batch and loss."""

    id: str
    label: str
    model: str  # bench_train's name of the config: xumx, unet, demucs
    peer: bool = False  # the PyPI Demucs-48 in a plain loop on the ``model`` trainer's batch and loss


TRAIN_ROWS: list[TrainRow] = [
    TrainRow("train-xumx", "ours, X-UMX (trainer)", "xumx"),
    TrainRow("train-unet", "ours, U-Net (trainer)", "unet"),
    TrainRow("train-demucs", "ours, Demucs (trainer)", "demucs"),
    TrainRow("train-peer", "PyPI Demucs-48 (depth 6, 2-layer BiLSTM), plain loop", "demucs", peer=True),
]
TRAIN_PEER = "train-peer"
R = TypeVar("R", Row, TrainRow)


# ----------------------------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=58.0, help="length of the song (default 58 s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the minimum time of each row is printed")
    parser.add_argument("--rows", default="", help="comma-separated row ids to run (default: the table's rows)")
    parser.add_argument("--skip", default="", help="comma-separated row ids to leave out")
    parser.add_argument(
        "--train-batch", type=int, default=0, help="batch size of the training steps (default 0: each config's)"
    )
    parser.add_argument("--train-repeat", type=int, default=1, help="timed training steps after the warm-up")
    parser.add_argument("--no-train", action="store_true", help="leave out the training table")
    parser.add_argument("--no-separation", action="store_true", help="only the training table")
    parser.add_argument("--train-rows", default="", help="comma-separated training row ids (default: all)")
    parser.add_argument("--list", action="store_true", help="print the row ids and exit")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="the release-layout files")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "WAV", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or args.threads < 1 or args.train_batch < 0 or args.train_repeat < 1:
        parser.error("--seconds, --repeat, --threads and --train-repeat must be positive, --train-batch >= 0")
    return args


def available(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(rows whose ``requires`` keyword the installed ``Separator`` takes, the others)."""
    if not any(r.requires for r in rows):
        return list(rows), []
    import inspect

    from danna_sep.separate import Separator

    keywords = inspect.signature(Separator).parameters
    return [r for r in rows if r.requires in (None, *keywords)], [
        r for r in rows if r.requires not in (None, *keywords)
    ]


def _ids(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def select_rows(rows: Sequence[R], extra: Sequence[R] = (), only: str = "", skip: str = "") -> list[R]:
    """The rows to run: ``only`` (ids, from ``rows`` and ``extra``, in table order) or all of ``rows``, less
    ``skip``. An unknown id is an error (a typo must not silently drop a row)."""
    known = {r.id: r for r in [*rows, *extra]}
    unknown = [i for i in [*_ids(only), *_ids(skip)] if i not in known]
    if unknown:
        raise SystemExit(f"unknown row id(s) {unknown}; known: {', '.join(known)}")
    chosen = [r for r in known.values() if r.id in _ids(only)] if only else list(rows)
    return [r for r in chosen if r.id not in _ids(skip)]


# ------------------------------------------------------------------------------------------------ formatting


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """10 log10 |ref|² / |ref - est|² (dB), over the common length; inf when equal."""
    n = min(ref.shape[-1], est.shape[-1])
    err = float(np.sum((ref[..., :n].astype(np.float64) - est[..., :n]) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(ref[..., :n].astype(np.float64) ** 2)) / err)


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _sdr_cell(values: Sequence[float] | None) -> str:
    if not values:
        return "—"
    return " / ".join("∞" if math.isinf(v) else f"{v:.1f}" for v in values)


def format_separation_table(rows: Sequence[Row], results: Mapping[str, dict], seconds: float) -> str:
    """The markdown table: one line per row, ``results[id]`` with ``seconds`` (wall), ``cpu_seconds`` (the
    process's CPU time, all threads: what a busy machine inflates least), ``peak_mb`` and ``sdr``
    (per stem, against ``reference``) or ``error``. Times are divided by the PyPI Demucs-48 row's when it ran."""
    peer = results.get(PEER, {}).get("seconds")
    lines = [
        f"| row | what runs | wall s | CPU s | × real time | time / PyPI Demucs-48 | peak RSS GB | SDR dB vs reference "
        f"({' / '.join(SOURCES)}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = results.get(row.id, {"error": "not run"})
        if "error" in r:
            lines.append(f"| {row.id} | {row.label} | {r['error']} | — | — | — | — | — |")
            continue
        wall = r["seconds"]
        ratio = wall / peer if peer else None
        ref = f" (vs {row.reference})" if row.reference and r.get("sdr") else ""
        lines.append(
            f"| {row.id} | {row.label} | {wall:.1f} | {_num(r.get('cpu_seconds'), '.1f')} | {seconds / wall:.2f} | "
            f"{_num(ratio)} | "
            f"{r['peak_mb'] / 1024:.1f} | {_sdr_cell(r.get('sdr'))}{ref} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Goal:
    text: str
    target: str
    measured: str
    met: bool | None  # None: not measurable from the rows that ran


def _time(results: Mapping[str, dict], key: str) -> float | None:
    r = results.get(key)
    return None if r is None or "error" in r else float(r["seconds"])


def _goal_ratio(text: str, target: str, value: float | None, ok: Callable[[float], bool], fmt: str = "{:.2f}×") -> Goal:
    if value is None:
        return Goal(text, target, "not run", None)
    return Goal(text, target, fmt.format(value).replace("inf", "∞"), ok(value))


# the TorchScript-files row against the original in the issue's own measurement (82.4 s vs 96.2 s): "as today"
TORCHSCRIPT_TODAY = 96.2 / 82.4
FAST_VARIANT_SDR = 40.0  # issue 19, goal 5: a fast path within 40 dB of the fp32 path per stem, unless lossy


def evaluate_goals(results: Mapping[str, dict], seconds: float, rows: Sequence[Row] = SEPARATION_ROWS) -> list[Goal]:
    """Issue 19's goals, each as a ratio of rows of this run (``results`` as for the table)."""
    peer, original = _time(results, PEER), _time(results, ORIGINAL)

    def div(a: str, b: float | None) -> float | None:
        ta = _time(results, a)
        return None if ta is None or b is None else ta / b

    def speed(a: str) -> float | None:
        ta = _time(results, a)
        return None if ta is None else seconds / ta

    def over_original(a: str) -> float | None:
        ta = _time(results, a)
        return None if ta is None or original is None else original / ta

    def min_sdr(a: str) -> float | None:
        r = results.get(a)
        return None if r is None or not r.get("sdr") else min(r["sdr"])

    def peak_ratio(a: str, b: str) -> float | None:
        ra, rb = results.get(a), results.get(b)
        if ra is None or rb is None or "error" in ra or "error" in rb:
            return None
        return ra["peak_mb"] / rb["peak_mb"]

    goals = [
        _goal_ratio("1. full blend, defaults (ours): real time", "≥ 2×", speed("ours"), lambda v: v >= 2),
        _goal_ratio(
            "1. full blend, defaults (ours): time / PyPI Demucs-48",
            "≤ 1.6",
            div("ours", peer),
            lambda v: v <= 1.6,
            "{:.2f}",
        ),
        _goal_ratio(
            "1. same, with the released weights imported (default-imported, loading included)",
            "≤ 1.6",
            div("default-imported", peer),
            lambda v: v <= 1.6,
            "{:.2f}",
        ),
        _goal_ratio("1. `--fast` (ours): real time", "≥ 3×", speed("ours-fast"), lambda v: v >= 3),
        _goal_ratio(
            "2. imported weights, defaults: 1.0.2 time / ours",
            "≥ 1.8×",
            over_original("default-imported"),
            lambda v: v >= 1.8,
        ),
    ]
    for key in ("preset-imported", "preset-released"):
        goals.append(
            _goal_ratio(f"2. `--original` ({key}): 1.0.2 time / ours", "≥ 1×", over_original(key), lambda v: v >= 1)
        )
        goals.append(
            _goal_ratio(
                f"2. `--original` ({key}) equals 1.0.2: worst stem's SDR",
                "≥ 45 dB",
                min_sdr(key),
                lambda v: v >= 45,
                "{:.1f} dB",
            )
        )
    goals.append(
        _goal_ratio(
            "2. release files, defaults (default-released): 1.0.2 time / ours",
            f"≥ {TORCHSCRIPT_TODAY:.2f}× (the issue's 96.2 s / 82.4 s)",
            over_original("default-released"),
            lambda v: v >= TORCHSCRIPT_TODAY - 1e-9,
        )
    )
    goals.append(
        _goal_ratio(
            "3. `--original` (preset-imported) peak RSS / 1.0.2's",
            "≤ 1",
            peak_ratio("preset-imported", ORIGINAL),
            lambda v: v <= 1,
            "{:.2f}",
        )
    )
    # the fast variants (an option, or against ours in fp32); --fast itself drops X-UMX by design
    checks = [r for r in rows if r.reference and (r.requires or (r.reference == "ours" and r.id != "ours-fast"))]
    checks += [r for r in rows if r.id == "default-imported"]
    for row in checks:
        goals.append(
            _goal_ratio(
                f"5. {row.id} vs {row.reference}: worst stem's SDR",
                f"≥ {FAST_VARIANT_SDR:.0f} dB",
                min_sdr(row.id),
                lambda v: v >= FAST_VARIANT_SDR,
                "{:.1f} dB",
            )
        )
    return goals


def format_goals(goals: Sequence[Goal]) -> str:
    lines = ["| goal (issue 19) | target | measured | met |", "|---|---|---|---|"]
    for g in goals:
        met = "—" if g.met is None else ("yes" if g.met else "**no**")
        lines.append(f"| {g.text} | {g.target} | {g.measured} | {met} |")
    return "\n".join(lines)


def format_train_table(rows: Sequence[TrainRow], results: Mapping[str, dict]) -> str:
    """One line per training row: ``results[id]`` with ``batch``, ``chunk`` (s), ``wall`` and ``cpu`` (s per step)
    or ``error``; ratios against the peer's row (per step, and per second of training audio)."""
    peer = results.get(TRAIN_PEER, {})
    lines = [
        "| step | batch × chunk | wall s / step | CPU s / step | audio s per wall s | step / peer step "
        "| (s per audio s) / peer's |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = results.get(row.id, {"error": "not run"})
        if "error" in r:
            lines.append(f"| {row.label} | — | {r['error']} | — | — | — | — |")
            continue
        audio = r["batch"] * r["chunk"]
        per_step = per_audio = None
        if "error" not in peer and peer.get("wall"):
            per_step = r["wall"] / peer["wall"]
            per_audio = (r["wall"] / audio) / (peer["wall"] / (peer["batch"] * peer["chunk"]))
        lines.append(
            f"| {row.label} | {r['batch']} × {r['chunk']:g} s | {r['wall']:.2f} | {r['cpu']:.2f} | "
            f"{audio / r['wall']:.2f} | {_num(per_step)} | {_num(per_audio)} |"
        )
    return "\n".join(lines)


def machine_line(threads: int) -> str:
    """CPU model, logical cores, torch threads, torch and Python versions, and the date (UTC)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    # the instruction sets that decide whether bf16 / AMX paths can pay off
    have = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f} " in text.replace("\n", " \n")]
    flags = f" ({', '.join(have)})" if have else ""
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{cpu}{flags}, {os.cpu_count()} logical cores, {threads} torch thread(s) per run, torch {torch_version}, "
        f"Python {platform.python_version()}; {date}"
    )


# -------------------------------------------------------------------------------------------------- children


def train_child(model: str, peer: bool, batch: int, repeat: int) -> dict:
    """One warm-up then ``repeat`` timed training steps (min); ``batch`` 0: the config's."""
    import resource

    import torch
    from bench_train import CONFIGS, plain_step, timed, trainer_for

    from danna_sep import SAMPLE_RATE
    from danna_sep.config import configs_dir, load_config

    if not batch:
        batch = int(load_config(configs_dir() / f"{CONFIGS[model]}.json")["data_loader"]["train"]["batch_size"])
    trainer, data = trainer_for(model, augment=False, batch=batch)
    if peer:
        from demucs.demucs import Demucs

        # the Demucs-48 (with the BiLSTM, as the separation table's peer), not bench_train's class defaults
        torch.manual_seed(0)
        net = Demucs(sources=list(SOURCES), channels=48, depth=6, lstm_layers=2)
        step = plain_step(net, trainer)  # the trainer gives only its loss (L1) and learning rate
        calls = [lambda: step(data)] * (repeat + 1)
    else:
        calls = [lambda b=b: trainer.train_step(b, data) for b in range(repeat + 1)]
    calls[0]()  # warm-up
    best = min(timed(c) for c in calls[1:])
    return {
        "batch": batch,
        "chunk": data[0].shape[-1] / SAMPLE_RATE,
        "cpu": best[0],
        "wall": best[1],
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ------------------------------------------------------------------------------------------------------ parent


def _read_stems(folder: Path) -> np.ndarray | None:
    import soundfile as sf

    try:
        return np.stack([sf.read(folder / f"{s}.wav", dtype="float32")[0].T for s in SOURCES])
    except (OSError, RuntimeError):
        return None


def run_separation(rows: Sequence[Row], args: argparse.Namespace, tmp: Path) -> dict[str, dict]:
    scripts = {"separate": str(HERE / "bench_separate.py"), "released": str(HERE / "bench_released.py")}
    if any(r.script == "released" for r in rows):
        args.cache.mkdir(parents=True, exist_ok=True)
        # its own process: Linux keeps ru_maxrss across exec, so the children would inherit its peak
        subprocess.run([sys.executable, scripts["released"], "--build", "--cache", str(args.cache)], check=True)
    song = tmp / "song.wav"
    make_song(song, args.seconds)
    results: dict[str, dict] = {}
    for round_ in range(args.repeat):
        for row in rows:
            out = tmp / row.id
            out.mkdir(exist_ok=True)
            extra = [*row.extra, *(["--cache", str(args.cache)] if row.script == "released" else [])]
            start = time.perf_counter()
            r = measure(row.mode, song, args.threads, script=scripts[row.script], out_dir=out, extra=extra)
            took = time.perf_counter() - start
            print(
                f"  [{round_ + 1}/{args.repeat}] {row.id}: "
                + (r["error"] if "error" in r else f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MB")
                + f" ({took:.0f} s with start-up)",
                file=sys.stderr,
                flush=True,
            )
            best = results.get(row.id)
            if best is None or "error" in best or ("error" not in r and r["seconds"] < best["seconds"]):
                results[row.id] = r
    for row in rows:  # SDR once all stems exist (outputs are deterministic: any round's will do)
        r = results[row.id]
        if row.reference is None or "error" in r or "error" in results.get(row.reference, {"error": ""}):
            continue
        est, ref = _read_stems(tmp / row.id), _read_stems(tmp / row.reference)
        if est is not None and ref is not None:
            r["sdr"] = [sdr(ref[i], est[i]) for i in range(len(SOURCES))]
    return results


def run_training(rows: Sequence[TrainRow], args: argparse.Namespace) -> dict[str, dict]:
    results: dict[str, dict] = {}
    script = str(Path(__file__).resolve())
    extra = ["--train-batch", str(args.train_batch), "--train-repeat", str(args.train_repeat)]
    for row in rows:
        start = time.perf_counter()
        mode = f"train:{row.model}:{'peer' if row.peer else 'ours'}"
        r = measure(mode, Path(os.devnull), args.threads, script=script, extra=extra)
        took = time.perf_counter() - start
        print(
            f"  {row.id}: " + (r["error"] if "error" in r else f"{r['wall']:.2f} s / step") + f" ({took:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        results[row.id] = r
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        import torch

        from danna_sep.runtime import keep_freed_memory

        keep_freed_memory()  # as the danna commands do
        torch.set_num_threads(args.threads)
        _, model, who = args.child[0].split(":")
        print(json.dumps(train_child(model, who == "peer", args.train_batch, args.train_repeat)))
        return
    rows = [] if args.no_separation else select_rows(SEPARATION_ROWS, EXTRA_ROWS, args.rows, args.skip)
    train_rows = [] if args.no_train else select_rows(TRAIN_ROWS, only=args.train_rows)
    if args.list:
        for row in [*SEPARATION_ROWS, *EXTRA_ROWS]:
            print(f"{row.id:18} {row.label}{'' if row in SEPARATION_ROWS else '  (only with --rows)'}")
        for train_row in TRAIN_ROWS:
            print(f"{train_row.id:18} {train_row.label}  (training)")
        return
    started = time.perf_counter()
    machine = machine_line(args.threads)
    print(f"machine: {machine}", flush=True)
    rows, missing = available(rows)
    for row in missing:
        print(f"  {row.id}: left out, this danna_sep's Separator has no `{row.requires}` option", flush=True)
    if rows:
        with tempfile.TemporaryDirectory() as tmp:
            results = run_separation(rows, args, Path(tmp))
        print(
            f"\nseparation of one {args.seconds:g} s stereo song (synthetic), CPU, {args.threads} thread(s) per run, "
            f"random full-size weights, min of {args.repeat} round(s); `ours*` and PyPI rows time the separation "
            "once the models are built, release-file rows (1.0.2, preset-*, default-*) include loading them\n"
        )
        print(format_separation_table(rows, results, args.seconds))
        print()
        print(format_goals(evaluate_goals(results, args.seconds, rows)))
    if train_rows:
        train = run_training(train_rows, args)
        batch = "each config's batch" if not args.train_batch else f"batch {args.train_batch}"
        print(
            f"\none training step per full config, CPU, fp32, {args.threads} thread(s), {batch} and chunk "
            f"(no gradient accumulation), min of {args.train_repeat} after a warm-up step; the peer: same batch, "
            "chunk and L1 loss as our Demucs' config\n"
        )
        print(format_train_table(train_rows, train))
    print(f"\n(bench_table.py took {(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
