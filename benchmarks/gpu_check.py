"""One short GPU check (issue 19): full-blend inference × real time in fp32 / fp16 / bf16, one AMP training step
per full config, and ``torchrun`` with one process. Nothing in CI depends on it; it is kept ready for a device run.

How to run it on a machine with a GPU (about 8 minutes at most with the default timeouts; give the tool ~9):

    bash benchmarks/gpu_check.sh                    # results in ${OUT:-.bench/gpu}/gpu_check.{json,txt}
    bash benchmarks/gpu_check.sh --seconds 60       # a longer song; any option below passes through
    PYTHON=python3 bash benchmarks/gpu_check.sh     # pick the interpreter (it needs torch with CUDA)

The wrapper takes ``$PYTHON``, else the first of ``.venv/bin/python`` and ``python3`` whose torch sees a GPU (a
carried CPU-only ``.venv`` is skipped); the repository root goes on ``PYTHONPATH``, so danna_sep need not be
installed, only its dependencies (``pip install -e .`` once if that python lacks them). Here, without a GPU,
``python benchmarks/gpu_check.py --device cpu --quick`` runs every part with the tiny configs, a 2 s song and two
training steps at batch 1 on 0.72 s chunks (``tests/test_gpu_check.py`` does that, in about 25 s on 2 cores).

Parts, each in its own process with its own timeout (one failing or hanging still leaves the others' results; the
exit status is 1 if any part failed):

- ``inference``: the three full-size models (random weights: speed does not depend on them) in a
  :class:`danna_sep.separate.Separator` with the original blend and the defaults, on a synthetic stereo song
  (``--seconds``, default 30), once in fp32 and once each under ``torch.autocast(device, dtype=float16 /
  bfloat16)``: wall seconds (after a short warm-up in the same precision), × real time, peak memory
  (``torch.cuda.max_memory_allocated``; on CPU the process's max RSS), and for fp16 / bf16 the SDR of every stem
  against the fp32 stem (``lossy`` when any is below 40 dB);
- ``train``: for ``configs/{x_umx_mwf,unet_attn,demucs_split}.json`` (the shipped batch sizes and chunk lengths,
  ``cum_steps`` 1 so every step is an optimizer step) with ``trainer.amp_enabled`` in float16 and in bfloat16,
  ``--steps`` calls of :meth:`Trainer.train_step` on random stems: the first is a warm-up, steps 2..N are timed;
  the loss of each step must be finite;
- ``torchrun``: ``python -m torch.distributed.run --standalone --nproc_per_node 1 train.py configs/x_umx_mwf.json
  --root <synthetic dataset> --max-steps 2`` with AMP: success, wall seconds, the checkpoint it left.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--seconds 30] [--steps 3] [--out DIR]
                                   [--parts inference,train,torchrun] [--timeout-inference 200] ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing danna_sep

SAMPLE_RATE = 44100
CONFIGS = {"xumx": "x_umx_mwf", "unet": "unet_attn", "demucs": "demucs_split"}
PARTS = ("inference", "train", "torchrun")
TIMEOUTS = {"inference": 200, "train": 160, "torchrun": 100}  # seconds; 460 s in all
PRECISIONS = ("fp32", "fp16", "bf16")
AMP_DTYPES = ("float16", "bfloat16")
LOSSY_DB = 40.0
QUICK_CHUNK = "dataset.train.args.seq_duration=0.72"  # ≈ 32 STFT frames, which every tiny model takes


def config_path(name: str, quick: bool) -> Path:
    return REPO / "configs" / ("tiny" if quick else "") / f"{name}.json"


# ----------------------------------------------------------------------------------------------------- helpers


def _device(name: str):
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: torch {torch.__version__} sees no CUDA device")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux: the process's max RSS


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def synthetic_song(seconds: float, seed: int = 0):
    """A stereo ``(2, samples)`` float32 song: a bass line, chords, a gated noise "drum" and a vibrato "voice"."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    beat = (np.sin(2 * np.pi * 2 * t) > 0.7).astype(np.float64)
    drums = 0.3 * rng.standard_normal(t.size) * beat
    bass = 0.3 * np.sin(2 * np.pi * (55 + 27.5 * (np.floor(t / 2) % 3)) * t)
    chords = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    voice = 0.2 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5 * t)) * (np.sin(2 * np.pi * 0.25 * t) > 0)
    left = drums + bass + chords + voice
    right = 0.8 * drums + bass + 0.6 * chords + voice
    return torch.from_numpy(np.stack([left, right]).astype(np.float32))


# -------------------------------------------------------------------------------------------------------- parts


def part_inference(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from danna_sep import SOURCES
    from danna_sep.blend import ORIGINAL_BAG
    from danna_sep.inference import LoadedModel
    from danna_sep.metrics import global_sdr
    from danna_sep.models import build_model
    from danna_sep.separate import Separator

    device = _device(args.device)
    models = {}
    for role in ORIGINAL_BAG.models:
        torch.manual_seed(0)
        arch = json.loads(config_path(CONFIGS[role], args.quick).read_text())["arch"]
        models[role] = LoadedModel.from_module(build_model(arch).eval(), config={"arch": arch}, device=device)
    sep = Separator(models, ORIGINAL_BAG)
    song = synthetic_song(args.seconds)
    warm = song[:, : round(min(args.seconds, 5.0) * SAMPLE_RATE)]
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    runs: list[dict[str, Any]] = []
    reference = None
    for precision in PRECISIONS:
        run: dict[str, Any] = {"precision": precision}
        try:
            autocast = torch.autocast(
                device.type, dtype=dtypes.get(precision, torch.float32), enabled=precision != "fp32"
            )
            with autocast:
                sep.separate(warm, SAMPLE_RATE)  # warm-up: CUDA context, cuDNN autotuning, this precision's kernels
            _sync(device)
            _reset_peak(device)
            start = time.perf_counter()
            with autocast:
                out = sep.separate(song, SAMPLE_RATE)
            _sync(device)
            wall = time.perf_counter() - start
            stems = torch.stack([out[s] for s in SOURCES]).double()
            if not torch.isfinite(stems).all():
                raise FloatingPointError("non-finite samples in the stems")
            run.update(seconds=wall, x_realtime=args.seconds / wall, peak_gib=_peak_gib(device))
            if precision == "fp32":
                reference = stems
            elif reference is not None:
                sdr = [float(v) for v in global_sdr(reference, stems)]
                run["sdr_vs_fp32_db"] = dict(zip(SOURCES, sdr, strict=True))
                run["min_sdr_db"] = min(sdr)
                run["lossy"] = min(sdr) < LOSSY_DB
            run["ok"] = True
        except Exception as exc:  # one precision failing (e.g. an op without a bf16 kernel) leaves the others
            run.update(ok=False, error=_error(exc))
        runs.append(run)
    return {
        "ok": all(r["ok"] for r in runs),
        "song_seconds": args.seconds,
        "models": {role: sum(p.numel() for p in m.module.parameters()) for role, m in models.items()},
        "runs": runs,
    }


def part_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from bench_train import RandomStems  # a sibling script: benchmarks/ is this script's own folder on sys.path

    from danna_sep.config import load_config
    from danna_sep.train import Trainer

    device = _device(args.device)
    runs: list[dict[str, Any]] = []
    for role, name in CONFIGS.items():
        for dtype in AMP_DTYPES:
            run: dict[str, Any] = {"config": name, "amp_dtype": dtype}
            trainer = None
            try:
                overrides = [
                    "trainer.amp_enabled=true",
                    f"trainer.amp_dtype={dtype}",
                    "trainer.cum_steps=1",
                    "data_loader.train.num_workers=0",
                ]
                if args.quick:  # batch 1: CPU float16 kernels are slow (a U-Net step at batch 4 takes 35 s)
                    overrides += ["device_augment.enabled=false", "data_loader.train.batch_size=1", QUICK_CHUNK]
                cfg = load_config(config_path(name, args.quick), overrides)
                batch_size = cfg["data_loader"]["train"]["batch_size"]
                samples = round(cfg["dataset"]["train"]["args"]["seq_duration"] * SAMPLE_RATE)
                data = RandomStems(batch_size, samples)
                torch.manual_seed(0)
                trainer = Trainer(
                    cfg, device=device, train_set=data, valid_set=data, verbose=False, progress=False, tensorboard=False
                )
                trainer.prepare()
                batch = (data.stems.sum(1), data.stems)
                _reset_peak(device)
                times, losses = [], []
                for step in range(args.steps):
                    before = float(trainer.pos.meters[0])
                    _sync(device)
                    start = time.perf_counter()
                    trainer.train_step(step, batch)
                    _sync(device)
                    times.append(time.perf_counter() - start)
                    losses.append(float(trainer.pos.meters[0]) - before)
                if not all(math.isfinite(v) for v in losses):
                    raise FloatingPointError(f"non-finite loss: {losses}")
                timed = times[1:] or times
                run.update(
                    ok=True,
                    model=role,
                    batch=batch_size,
                    chunk_seconds=samples / SAMPLE_RATE,
                    first_step_s=times[0],
                    step_s=sum(timed) / len(timed),
                    timed_steps=len(timed),
                    loss=losses[-1],
                    grad_scale=float(trainer.scaler.get_scale()) if trainer.scaler.is_enabled() else 1.0,
                    peak_gib=_peak_gib(device),
                )
            except Exception as exc:  # e.g. out of memory at the shipped batch size: the other configs still run
                run.update(ok=False, error=_error(exc))
            finally:
                del trainer
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            runs.append(run)
    return {"ok": all(r["ok"] for r in runs), "steps": args.steps, "runs": runs}


def part_torchrun(args: argparse.Namespace) -> dict[str, Any]:
    from danna_sep.config import read_config
    from danna_sep.data.synth import make_synthetic_dataset

    device = _device(args.device)  # no silent fall-back to the CPU (as `danna train` does without CUDA)
    config = config_path("x_umx_mwf", args.quick)
    seq = float(read_config(config)["dataset"]["train"]["args"]["seq_duration"])
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        root = make_synthetic_dataset(Path(tmp) / "data", tracks={"train": 1, "valid": 1}, seconds=seq + 1.0, seed=0)
        overrides = [
            "trainer.amp_enabled=true",
            "trainer.cum_steps=1",
            "trainer.audio_seconds=0",
            "dataset.train.args.samples_per_track=16",  # more batches than --max-steps: no validation pass
            "data_loader.train.batch_size=4",
        ]
        if args.quick:
            overrides += ["data_loader.train.num_workers=0", "device_augment.enabled=false"]
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            str(REPO / "train.py"), str(config), "--root", str(root), "--max-steps", "2", "--workdir", tmp,
            "--no-progress", "--no-tensorboard",
        ]  # fmt: skip
        cmd += ["--device", str(device.index) if device.type == "cuda" else str(device)]
        for o in overrides:
            cmd += ["--set", o]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        env.setdefault("OMP_NUM_THREADS", str(max(1, os.cpu_count() or 1)))
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=args.child_timeout)
        wall = time.perf_counter() - start
        saved = sorted(p.name for p in (Path(tmp) / "saved").glob("*.pt")) if (Path(tmp) / "saved").is_dir() else []
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    ok = proc.returncode == 0 and bool(saved)
    result: dict[str, Any] = {"ok": ok, "rc": proc.returncode, "seconds": wall, "config": config.name, "saved": saved}
    if not ok:
        result["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    return result


CHILDREN = {"inference": part_inference, "train": part_train, "torchrun": part_torchrun}


# ------------------------------------------------------------------------------------------------------ driver


def run_part(part: str, args: argparse.Namespace, argv: list[str], out: Path) -> dict[str, Any]:
    """Run one part in its own process (its own peak memory, a hang or a crash stays there) under its timeout."""
    timeout = getattr(args, f"timeout_{part}")
    log = out / f"gpu_check_{part}.log"
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", part, "--result", str(result_file)]
        cmd += ["--child-timeout", str(max(1, timeout - 5))]
        start = time.perf_counter()
        with log.open("w") as fh:
            # its own process group, so that a timeout also ends what it started (torchrun and its worker)
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        wall = time.perf_counter() - start
        result = json.loads(result_file.read_text()) if result_file.exists() else None
    if result is None:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        why = f"timed out after {timeout} s" if rc is None else f"exit status {rc}"
        result = {"ok": False, "error": f"{why}: {tail[0][:300] if tail else '(no output)'}"}
    result["part_seconds"] = wall
    return result


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return "-" if v is None else str(v)


def table(report: dict[str, Any]) -> str:
    lines = [
        f"gpu_check on {report['device_name']} (torch {report['torch']}, --device {report['device']}"
        f"{', --quick' if report['quick'] else ''})",
        "",
    ]
    parts = report["parts"]
    for part in report["requested"]:
        r = parts[part]
        lines.append(f"== {part}: {'ok' if r['ok'] else 'FAILED'} ({r['part_seconds']:.1f} s)")
        if "runs" not in r and not r["ok"]:
            lines.append(f"   {r.get('error', '')}")
        if part == "inference" and "runs" in r:
            lines.append(f"   {r['song_seconds']:g} s song, models {r['models']}")
            lines.append(
                f"   {'precision':<9} {'seconds':>8} {'x rt':>8} {'peak GiB':>9} {'min SDR dB':>11}  per source"
            )
            for run in r["runs"]:
                if not run["ok"]:
                    lines.append(f"   {run['precision']:<9} FAILED {run['error']}")
                    continue
                sdr = run.get("sdr_vs_fp32_db")
                per = " ".join(f"{k} {v:.1f}" for k, v in sdr.items()) if sdr else "(reference)"
                mark = " LOSSY" if run.get("lossy") else ""
                lines.append(
                    f"   {run['precision']:<9} {run['seconds']:>8.2f} {run['x_realtime']:>8.1f} "
                    f"{run['peak_gib']:>9.2f} {_fmt(run.get('min_sdr_db')):>11}  {per}{mark}"
                )
        if part == "train" and "runs" in r:
            lines.append(f"   {r['steps']} steps each, the first untimed (warm-up)")
            head = f"{'config':<13} {'amp':<9} {'batch':>5} {'chunk s':>7} {'1st s':>7} {'step s':>7} {'loss':>8}"
            lines.append(f"   {head} {'peak GiB':>9}")
            for run in r["runs"]:
                if not run["ok"]:
                    lines.append(f"   {run['config']:<13} {run['amp_dtype']:<9} FAILED {run['error']}")
                    continue
                lines.append(
                    f"   {run['config']:<13} {run['amp_dtype']:<9} {run['batch']:>5} {run['chunk_seconds']:>7.2f} "
                    f"{run['first_step_s']:>7.3f} {run['step_s']:>7.3f} {_fmt(run['loss']):>8} {run['peak_gib']:>9.2f}"
                )
        if part == "torchrun" and "rc" in r:
            lines.append(
                f"   {r['config']}, 2 steps with AMP: rc {r['rc']}, {r['seconds']:.1f} s, saved {', '.join(r['saved'])}"
                + (f"; {r['error']}" if not r["ok"] else "")
            )
    lines.append("")
    lines.append("all parts ok" if report["ok"] else "FAILED: " + ", ".join(p for p in parts if not parts[p]["ok"]))
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument(
        "--quick", action="store_true", help="tiny configs, a 2 s song, 2 steps at batch 1: a test of the script"
    )
    p.add_argument("--seconds", type=float, default=None, help="song length for inference (default 30; quick 2)")
    p.add_argument("--steps", type=int, default=None, help="training steps per config (default 3; quick 2)")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / ".bench" / "gpu"), help="results folder")
    for part, seconds in TIMEOUTS.items():
        p.add_argument(f"--timeout-{part}", type=int, default=seconds, help=f"seconds (default {seconds})")
    p.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--child-timeout", type=int, default=60, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 30.0
    if args.steps is None:
        args.steps = 2 if args.quick else 3
    if args.steps < 1 or args.seconds <= 0:
        p.error("--steps must be >= 1 and --seconds > 0")
    args.requested = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(args.requested) - set(PARTS))
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.child:
        result = CHILDREN[args.child](args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_name = "cpu"
    if args.device.startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(torch.device(args.device))
    report: dict[str, Any] = {
        "device": args.device,
        "device_name": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.executable,
        "quick": args.quick,
        "requested": args.requested,
        "parts": {},
    }
    for part in args.requested:
        print(f"== {part} …", flush=True)
        report["parts"][part] = run_part(part, args, argv, out)
    report["ok"] = all(r["ok"] for r in report["parts"].values())
    text = table(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.txt").write_text(text + "\n")
    print(text)
    print(f"\nresults: {out / 'gpu_check.json'}, {out / 'gpu_check.txt'}; logs: {out}/gpu_check_<part>.log")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
