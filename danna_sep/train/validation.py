"""Validation arithmetic: waveform estimates from the model output (Wiener filter per the ``MWF`` block), the
per-source global SDR sums of a rank's share, and the summary next to the "mixture as estimate" baseline."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .. import SOURCES
from ..config import MWFConfig
from ..metrics import global_sdr
from ..spectral import STFT
from ..wiener import wiener

# the sums of a validation: 3 losses, SDR per source, baseline SDR per source, items, batches
N_SUMS = 3 + 2 * len(SOURCES) + 2


def estimate(out: Any, mix: Tensor, stft: STFT, mwf: MWFConfig, time_domain: bool) -> Tensor:
    """Waveform estimates ``(batch, 4, channels, samples)`` from a model output: the stems ``(batch, 4, channels,
    samples)`` of a waveform model, or the ``(mask, spectrogram)`` of a spectral one (masks ``(batch, 4, channels,
    bins, frames)``, the mixture's complex STFT ``(batch, channels, bins, frames)``); ``mix``: ``(batch, channels,
    samples)``, for the length."""
    if time_domain:
        return out
    mask, spec = out
    mag = mask * spec.abs().unsqueeze(1)
    if mwf.softmask and mwf.alpha != 1:
        mag = mag.pow(mwf.alpha)
    est = wiener(mag, spec, iterations=mwf.n_iter, softmask=mwf.softmask, residual=mwf.residual_model)
    return stft.inverse(est[:, : len(SOURCES)], mix.shape[-1])


def shard(size: int, rank: int, world: int, limit: int | None, batch_size: int) -> list[int]:
    """This rank's validation items; ``limit``: at most that many batches (``trainer.val_epoch_length``)."""
    indices = list(range(size))[rank::world]
    if limit is not None:
        indices = indices[: limit * batch_size]
    return indices


@torch.no_grad()
def accumulate(
    batches: Iterable[tuple[Tensor, Tensor]],
    evaluate: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor], Tensor]],
    need_baseline: bool,
    device: torch.device,
) -> Tensor:
    """The :data:`N_SUMS` sums over ``(mix, stems)`` batches on the device; ``evaluate(mix, stems)`` →
    (loss, extras, estimates)."""
    sums = torch.zeros(N_SUMS, dtype=torch.float64, device=device)
    for mix, stems in batches:
        loss, extras, est = evaluate(mix, stems)
        length = min(est.shape[-1], stems.shape[-1])
        sdr = global_sdr(stems[..., :length], est[..., :length].to(stems.dtype))  # (batch, 4)
        n = mix.shape[0]
        zero = loss.new_zeros(())
        sums[:3] += torch.stack([loss, extras.get("loss_f", zero), extras.get("loss_t", zero)]).double() * n
        sums[3 : 3 + len(SOURCES)] += sdr.sum(0)
        if need_baseline:
            base = global_sdr(stems, mix.unsqueeze(1).expand_as(stems))
            sums[3 + len(SOURCES) : 3 + 2 * len(SOURCES)] += base.sum(0)
        sums[-2] += n
        sums[-1] += 1
    return sums


def summarise(
    values: Sequence[float], baseline: dict[str, float] | None, epoch: int, step: int
) -> tuple[dict[str, Any], dict[str, float] | None]:
    """The history entry of the (all-ranks) sums ``values``, and the baseline: ``baseline`` if given (it is
    computed once per run), else the one in ``values``."""
    n = max(values[-2], 1.0)
    if baseline is None and values[-2] > 0:
        baseline = {s: values[3 + len(SOURCES) + i] / n for i, s in enumerate(SOURCES)}
    result: dict[str, Any] = {
        "epoch": epoch,
        "step": step,
        "items": int(values[-2]),
        "loss": values[0] / n,
        "loss_f": values[1] / n,
        "loss_t": values[2] / n,
        "sdr": {s: values[3 + i] / n for i, s in enumerate(SOURCES)},
        "baseline": dict(baseline or {}),
    }
    result["avg_sdr"] = sum(result["sdr"].values()) / len(SOURCES)
    result["avg_baseline"] = sum(result["baseline"].values()) / len(SOURCES) if result["baseline"] else math.nan
    return result, baseline
