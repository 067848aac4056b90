"""TensorBoard logging of a run: the writer's folder, training and epoch scalars, and stereo audio summaries."""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from torch import Tensor

from .. import SAMPLE_RATE, SOURCES


def open_writer(runs: Path, name: str) -> tuple[Any, Path]:
    """A SummaryWriter in ``runs/<name>/<timestamp>`` and that folder."""
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when logging

    log_dir = runs / name / datetime.now().strftime("%m%d_%H%M%S")
    return SummaryWriter(log_dir=str(log_dir)), log_dir


def log_training(writer: Any, step: int, losses: Sequence[float], lr: float, extra_monitor: Sequence[str]) -> None:
    """The interval means ``losses`` = (loss, loss_f, loss_t) at micro-batch ``step``."""
    loss, loss_f, loss_t = losses
    writer.add_scalar("training/loss", loss, step)
    for k in extra_monitor:
        writer.add_scalar(f"training/{k}", loss_f if k == "loss_f" else loss_t, step)
    writer.add_scalar("training/lr", lr, step)


def log_epoch(
    writer: Any,
    epoch_no: int,
    train_loss: float,
    lr: float,
    val: Mapping[str, Any] | None,
    extra_monitor: Sequence[str],
) -> None:
    """An epoch's training loss and learning rate, and its validation (see :func:`.validation.summarise`)."""
    writer.add_scalar("epoch/train_loss", train_loss, epoch_no)
    writer.add_scalar("epoch/lr", lr, epoch_no)
    if val is not None:
        for k in ("loss", *extra_monitor):
            writer.add_scalar(f"validation/{k}", val[k], epoch_no)
        for s in SOURCES:
            writer.add_scalar(f"validation/{s}_sdr", val["sdr"][s], epoch_no)
            writer.add_scalar(f"validation/{s}_sdr_mixture", val["baseline"].get(s, math.nan), epoch_no)
        writer.add_scalar("validation/avg_sdr", val["avg_sdr"], epoch_no)
        writer.add_scalar("validation/avg_sdr_mixture", val["avg_baseline"], epoch_no)
    writer.flush()


def log_audio(writer: Any, mix: Tensor, estimates: Tensor, seconds: float, step: int) -> None:
    """The first ``seconds`` of a mixture ``(channels, samples)`` and its estimates ``(4, channels, samples)``."""
    n = int(seconds * SAMPLE_RATE)
    writer.file_writer.add_summary(audio_summary("audio/mixture", mix[:, :n]), step)
    for i, src in enumerate(SOURCES):
        writer.file_writer.add_summary(audio_summary(f"audio/{src}", estimates[i, :, :n]), step)


def audio_summary(tag: str, wav: Tensor, sample_rate: int = SAMPLE_RATE) -> Any:
    """A TensorBoard audio summary of a (channels, samples) waveform, stereo kept (torch's helper is mono only)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    pcm = (wav.detach().float().clamp(-1, 1).T.cpu().numpy() * 32767).astype("<i2")  # interleaved (samples, channels)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    audio = Summary.Audio(
        sample_rate=sample_rate,
        num_channels=pcm.shape[1],
        length_frames=pcm.shape[0],
        encoded_audio_string=buf.getvalue(),
        content_type="audio/wav",
    )
    return Summary(value=[Summary.Value(tag=tag, audio=audio)])
