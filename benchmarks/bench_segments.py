"""Segment length and overlap, chosen by measurement: each model alone through the separator, the cost of each
(segment, overlap) against what the cut costs in quality.

Every model is cut into overlapping segments that are cross-faded (``Separator(segment=…, overlap=…)``); the
overlap is computed twice, so it costs ``1 / (1 − overlap)`` of the work, and each cut changes the estimates near
it. For each model alone (weight 1 in a one-model blend, no Wiener iteration, so that only the cut differs), on
music-like audio (``original_release.example_mix``) with calibrated random weights imported into ours
(``original_release.randomize`` → :func:`danna_sep.release.convert.build_imported`, the released-weights path):

- ``CPU s / audio s``: process CPU time of ``Separator.separate`` divided by the audio's length (CPU time, not wall
  time: the machine is shared), the best of ``--repeat`` runs;
- ``SDR vs whole``: per source, dB, of the stems against the same model run on the whole track at once
  (``split=False``: no cut at all), ``10·log10(Σ ref² / Σ (ref − est)²)``;
- ``SDR vs default``: the same against today's default (``defaults.SPECTRAL_SEGMENT_FRAMES`` /
  ``WAVEFORM_SEGMENT_SECONDS``, ``OVERLAP``).

Random weights are not trained ones: the receptive fields (and so where a cut is felt) are the architecture's,
but how much a trained model's estimates change at a cut may differ. Read the ratios between rows.

    .venv/bin/python benchmarks/bench_segments.py [--seconds 40] [--models unet,xumx,demucs] [--threads 2]
                                                  [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bench_models import BUILDERS  # noqa: E402
from original_release import models as original  # noqa: E402

from danna_sep import SAMPLE_RATE, SOURCES  # noqa: E402
from danna_sep.blend import Bag  # noqa: E402
from danna_sep.defaults import OVERLAP, SPECTRAL_SEGMENT_FRAMES, WAVEFORM_SEGMENT_SECONDS  # noqa: E402
from danna_sep.inference import LoadedModel  # noqa: E402
from danna_sep.release.convert import build_imported  # noqa: E402

HOP = 1024
SPECTRAL_SECONDS = SPECTRAL_SEGMENT_FRAMES * HOP / SAMPLE_RATE  # 11.89 s
# (segment seconds, overlap): today's default first; spectral segments are floored to the U-Net's 64-frame grid
CANDIDATES = {
    "spectral": [
        (SPECTRAL_SECONDS, OVERLAP),
        (SPECTRAL_SECONDS, 0.125),
        (SPECTRAL_SECONDS / 2, OVERLAP),
        (2 * SPECTRAL_SECONDS, 0.125),
        (2 * SPECTRAL_SECONDS, 0.0625),
    ],
    "waveform": [
        (WAVEFORM_SEGMENT_SECONDS, OVERLAP),
        (WAVEFORM_SEGMENT_SECONDS, 0.125),
        (WAVEFORM_SEGMENT_SECONDS / 2, OVERLAP),
        (2 * WAVEFORM_SEGMENT_SECONDS, 0.125),
        (2 * WAVEFORM_SEGMENT_SECONDS, 0.0625),
    ],
}


def sdr(ref: Tensor, est: Tensor) -> list[float]:
    """Per source (dim 0), dB."""
    dims = list(range(1, ref.dim()))
    err = (ref - est).double().square().sum(dims)
    return (10 * torch.log10(ref.double().square().sum(dims) / err)).tolist()


def separate(model: LoadedModel, role: str, wav: Tensor, **options: object) -> tuple[Tensor, float]:
    """The four stems ``(sources, channels, samples)`` of ``model`` alone and the process CPU seconds taken."""
    from danna_sep.separate import Separator

    sep = Separator({role: model}, Bag(models=[role], weights=[[1.0] * len(SOURCES)]), niter=0, **options)
    start = time.process_time()
    stems = sep.separate(wav, SAMPLE_RATE)
    return torch.stack([torch.as_tensor(stems[s]) for s in SOURCES]), time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--models", default="unet,xumx,demucs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    wav = original.example_mix(round(args.seconds * SAMPLE_RATE), seed=2)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.seconds:g} s of music-like audio, each model "
        f"alone, no Wiener iteration; SDR per source {'/'.join(SOURCES)} (dB)"
    )
    print(f"{'model':<8}{'segment':>9}{'overlap':>9}{'CPU s/audio s':>15}  {'SDR vs whole':<26}SDR vs default")
    for role in args.models.split(","):
        torch.manual_seed(0)
        _, module = build_imported(role, original.randomize(BUILDERS[role][0](), seed=1))
        model = LoadedModel.from_module(module)
        separate(model, role, wav[:, : 5 * SAMPLE_RATE])  # warm-up: the first calls pay for allocations
        whole, whole_cpu = separate(model, role, wav, split=False)
        print(f"{role:<8}{'whole':>9}{'—':>9}{whole_cpu / args.seconds:>15.3f}")
        default = None
        kind = "spectral" if role != "demucs" else "waveform"
        for segment, overlap in CANDIDATES[kind]:
            runs = [separate(model, role, wav, segment=segment, overlap=overlap) for _ in range(args.repeat)]
            stems, cpu = runs[0][0], min(c for _, c in runs)
            default = stems if default is None else default
            fmt = lambda xs: " ".join(f"{x:5.1f}" for x in xs)  # noqa: E731
            print(
                f"{role:<8}{segment:>8.2f}s{overlap:>9.4f}{cpu / args.seconds:>15.3f}  "
                f"{fmt(sdr(whole, stems)):<26}{fmt(sdr(default, stems))}"
            )


if __name__ == "__main__":
    main()
