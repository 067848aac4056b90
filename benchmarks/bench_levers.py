"""Inference speed levers on CPU (issue 19), each model alone against danna-sep's current inference path.

Every model is full size with calibrated random weights (``original_release.randomize``) imported into ours
(:func:`danna_sep.release.convert.build_imported`, the released-weights path), and runs as
:class:`danna_sep.inference.LoadedModel` runs it today (eval, batch norms folded, ``torch.inference_mode``): that
is ``eager``, the reference. Inputs are music-like (``original_release.example_mix``), batch 1 as the separator
gives them: X-UMX and the U-Net a magnitude ``(1, 2, 2049, 512)`` (one 512-frame segment), Demucs
``WAVEFORM_BATCH`` = 3 segments of 10 s plus the separator's margin and grid ``(3, 2, 447143)``.

Levers (``--levers``, those that do not apply to a model are skipped):

* ``compile``: ``torch.compile`` (inductor, ``freezing=True``, ``dynamic=False``), mode default;
  ``compile-ma``: the same with ``mode="max-autotune-no-cudagraphs"``; ``compile-nf``: without freezing;
* ``aoti``: ``torch.export`` → ``torch._inductor.aoti_compile_and_package`` (freezing) → ``aoti_load_package``;
* ``onnx``: our exporter (``danna_sep.export.export_onnx``) → onnxruntime through ``load_model`` (intra-op threads
  = torch's, all graph optimisations);
* ``no-mkldnn``: ``torch.backends.mkldnn.flags(enabled=False)`` (what oneDNN buys today);
* ``onednn-bf16``: ``torch.backends.mkldnn.fp32_precision = "bf16"`` (oneDNN may run fp32 convs/matmuls in bf16);
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` of ``nn.LSTM`` + ``nn.Linear`` (X-UMX, Demucs);
* ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around the call, output back to float32;
* ``product-<precision>``: the lever as the product runs it (``LoadedModel.with_precision``), when given.

The U-Net's channels-last layout is already in the model (``UNetAttn.__init__``; 1.2× in
``benchmarks/bench_unet.py``), so it is the reference here, not a lever.

Each lever's output is compared with ``eager``'s: SDR per source (drums, bass, other, vocals), dB, of the masked
magnitudes (Demucs: of the stems), ``10·log10(Σ ref² / Σ (ref − out)²)``; ≥ 40 dB counts as lossless. ``build``
is the lever's set-up: compile / export / load plus its first call (the compilation happens there), in seconds.
Then eager and all levers alternate over ``--rounds`` rounds (order reversed every other round, one warm-up call
each: ``bench_models.alternate``); best wall and best process CPU seconds (all threads; onnxruntime's too),
``speed-up`` = eager / lever. The CPU is shared: compare the ratios, the CPU ones under load (waiting for a core
held by another job does not count in them, but OpenMP's spinning at its barriers does).

    .venv/bin/python benchmarks/bench_levers.py [--models xumx,unet,demucs]
                                                [--levers compile,aoti,onnx,no-mkldnn,onednn-bf16,int8,bf16]
                                                [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import BUILDERS, alternate, original

from danna_sep.export import export_onnx, load_model
from danna_sep.inference import LoadedModel, ModelInfo
from danna_sep.models.demucs import BLSTM
from danna_sep.release.convert import build_imported
from danna_sep.separate.streams import WAVEFORM_BATCH, WAVEFORM_MARGIN
from danna_sep.spectral import STFT

FRAMES = 512  # SPECTRAL_SEGMENT_FRAMES
HOP = 1024
LOSSY = ("onednn-bf16", "int8", "bf16")
APPLIES = {
    "int8": ("xumx", "demucs"),
}

Run = Callable[[], Tensor]


def music_input(name: str, grid: int) -> Tensor:
    """The separator's input for ``name``, from music-like audio (module docstring)."""
    if name == "demucs":
        n = 10 * 44100 + WAVEFORM_MARGIN + grid - 1
        return torch.stack([original.example_mix(n, seed=2 + i) for i in range(WAVEFORM_BATCH)])
    wav = original.example_mix((FRAMES - 1) * HOP, seed=2).unsqueeze(0)
    return STFT()(wav).abs().contiguous()


def sdr(ref: Tensor, out: Tensor, x: Tensor, spectral: bool) -> list[float]:
    """SDR per source (dB) of ``out`` against ``ref`` (masks → masked magnitudes first)."""
    if spectral:
        ref, out = ref * x.unsqueeze(1), out * x.unsqueeze(1)
    dims = [d for d in range(ref.dim()) if d != 1]
    error = (ref.double() - out.double()).square().sum(dims)
    return (10 * torch.log10(ref.double().square().sum(dims) / error)).tolist()


def _call(fn: Callable[[Tensor], Tensor], x: Tensor, context: Callable[[], contextlib.AbstractContextManager]) -> Run:
    def run() -> Tensor:
        with torch.inference_mode(), context():
            return fn(x).float()

    return run


def build_lever(lever: str, module: nn.Module, info: ModelInfo, x: Tensor, tmp: Path) -> Run:
    """A call of ``module`` on ``x`` through ``lever``, ready (compiled / exported / loaded)."""
    null = contextlib.nullcontext
    if lever == "eager":
        return _call(module, x, null)
    if lever in ("compile", "compile-ma", "compile-nf"):
        mode = "max-autotune-no-cudagraphs" if lever == "compile-ma" else None
        options = {"freezing": lever != "compile-nf"}
        return _call(torch.compile(module, dynamic=False, mode=mode, options=options), x, null)
    if lever == "aoti":
        with torch.no_grad():
            program = torch.export.export(module, (x,))
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=str(tmp / "model.pt2"), inductor_configs={"freezing": True}
            )
        return _call(torch._inductor.aoti_load_package(package), x, null)
    if lever == "onnx":
        path = tmp / "model.onnx"
        export_onnx(module, path, info, fixed_length=x.shape[-1])
        return _call(load_model(path), x, null)
    if lever == "no-mkldnn":
        return _call(module, x, lambda: torch.backends.mkldnn.flags(enabled=False))
    if lever == "onednn-bf16":

        @contextlib.contextmanager
        def bf16_math() -> contextlib.AbstractContextManager:
            before = torch.backends.mkldnn.fp32_precision
            torch.backends.mkldnn.fp32_precision = "bf16"
            try:
                yield
            finally:
                torch.backends.mkldnn.fp32_precision = before

        return _call(module, x, bf16_math)
    if lever == "int8":
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {nn.LSTM, nn.Linear}, torch.qint8)
        for layer in quantized.modules():
            if isinstance(layer, BLSTM):  # its step-by-step path reads float weights: the quantized nn.LSTM instead
                layer._use_steps = lambda x: False  # type: ignore[method-assign]
        return _call(quantized, x, null)
    if lever == "bf16":
        return _call(module, x, lambda: torch.autocast("cpu", torch.bfloat16))
    if lever.startswith("product-"):
        loaded = LoadedModel.from_module(module, info).with_precision(lever.split("-", 1)[1])  # type: ignore[attr-defined]
        return lambda: loaded(x)
    raise SystemExit(f"unknown lever {lever!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="xumx,unet,demucs")
    ap.add_argument("--levers", default="compile,aoti,onnx,no-mkldnn,onednn-bf16,int8,bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; best wall s of {args.rounds} alternated "
        "rounds; speed-up = eager / lever; SDR vs eager per source (drums, bass, other, vocals)"
    )
    print(
        f"{'model':7} {'lever':13} {'build s':>8} {'wall s':>7} {'speed-up':>8} {'CPU s':>7} {'speed-up':>8}"
        "   SDR dB per source"
    )
    for name in args.models.split(","):
        torch.manual_seed(0)
        _, ours = build_imported(name, original.randomize(BUILDERS[name][0](), seed=1))
        loaded = LoadedModel.from_module(ours)
        module, info = loaded.module, loaded.info
        assert module is not None
        x = music_input(name, info.grid)
        runs: dict[str, Run] = {}
        builds: dict[str, float] = {}
        failed: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for lever in ["eager", *args.levers.split(",")]:
                if name not in APPLIES.get(lever, (name,)):
                    continue
                start = time.perf_counter()
                try:
                    run = build_lever(lever, module, info, x, Path(tmp))
                    run()  # the compilation happens on the first call
                except Exception as exc:  # a lever that does not work for this model is a result too
                    failed[lever] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:100]}"
                    print(f"{name:7} {lever:13} failed: {failed[lever]}", flush=True)
                    continue
                builds[lever] = time.perf_counter() - start
                runs[lever] = run
                print(f"{name:7} {lever:13} {builds[lever]:8.1f}   (built)", flush=True)
            ref = runs["eager"]()
            quality = {lever: sdr(ref, run(), x, name != "demucs") for lever, run in runs.items() if lever != "eager"}
            best = alternate(runs, args.rounds)
        for lever in runs:
            (wall, cpu), (wall_ref, cpu_ref) = best[lever], best["eager"]
            values = " ".join(f"{v:6.1f}" for v in quality.get(lever, []))
            print(
                f"{name:7} {lever:13} {builds[lever]:8.1f} {wall:7.3f} {wall_ref / wall:7.2f}x "
                f"{cpu:7.3f} {cpu_ref / cpu:7.2f}x   {values}",
                flush=True,
            )
        del runs, module, loaded, ours
        gc.collect()


if __name__ == "__main__":
    main()
