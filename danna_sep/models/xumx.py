"""X-UMX (CrossNet-Open-Unmix): four Open-Unmix paths joined by two averaging bridges.

One path per source (drums, bass, other, vocals)::

    |X| ─crop─▶ (x + input_mean_s)·input_scale_s ─▶ encoder_s ─▶ tanh ─┐
                                                                      mean_s  = cross_1      (bridge 1)
    cross_1 ─▶ BiLSTM_s ─┐
                         mean_s ─▶ cat(cross_1, ·) = cross_2                                  (bridge 2)
    cross_2 ─▶ decoder_s ─▶ ·output_scale_s + output_mean_s ─▶ ReLU ─▶ mask_s

The per-source linear layers run as one batched matmul over a leading ``sources`` axis (the same maths as a
grouped 1×1 convolution, without convolution overhead). Activations are kept as ``(sources, features, batch·frames)``
so that every batch norm is a plain ``BatchNorm1d`` over ``sources·features`` channels and, for batch 1, the mask
comes out in its final layout without a copy.

For inference :func:`danna_sep.models.fuse.fold_batchnorm` folds every affine step into the linear layers (the input
normalisation and the encoder's batch norm into the encoder, which then reads the spectrogram once for all sources
instead of four normalised copies; the decoders' batch norms and the output affine into the decoders) and sets
their ``*_bias``; with a bias set, :meth:`X_UMX.forward` takes the folded path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import SOURCES
from ..errors import ConfigError


class PerSourceLinear(nn.Module):
    """``sources`` independent bias-free linear maps, applied at once.

    ``(sources, in_features, n)`` → ``(sources, out_features, n)``; ``weight[s]`` is source ``s``'s
    ``(out_features, in_features)`` matrix, as in ``nn.Linear``.
    """

    def __init__(self, sources: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(sources, out_features, in_features))
        # nn.Linear's default initialisation, per source
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.bmm(self.weight, x)


class X_UMX(nn.Module):
    """X-UMX mask estimator.

    Args:
        n_fft: STFT size; the model sees and returns ``n_fft // 2 + 1`` bins.
        hidden_channels: width of the encoder/decoder per source; each BiLSTM has ``hidden_channels // 2``
            units per direction.
        max_bins: the encoders see only the lowest ``max_bins`` bins (1487 = 16 kHz at 44.1 kHz); None = all.
        nb_channels: audio channels (2 = stereo).
        nb_layers: stacked BiLSTM layers per source.
        dropout: dropout between LSTM layers (only when ``nb_layers > 1``).

    ``forward``: magnitude ``(batch, channels, bins, frames)`` → non-negative masks
    ``(batch, sources, channels, bins, frames)``, sources in the order drums, bass, other, vocals.
    """

    domain = "spectral"

    def __init__(
        self,
        n_fft: int = 4096,
        hidden_channels: int = 512,
        max_bins: int | None = 1487,
        nb_channels: int = 2,
        nb_layers: int = 3,
        dropout: float = 0.4,
    ):
        super().__init__()
        nb_bins = n_fft // 2 + 1
        max_bins = nb_bins if max_bins is None else max_bins
        if not 0 < max_bins <= nb_bins:
            raise ConfigError(f"X_UMX.max_bins: {max_bins} is not in 1..{nb_bins} (n_fft {n_fft})")
        if hidden_channels < 2 or hidden_channels % 2:
            raise ConfigError(f"X_UMX.hidden_channels: must be even (two LSTM directions), got {hidden_channels}")
        if nb_layers < 1 or nb_channels < 1:
            raise ConfigError(f"X_UMX: nb_layers and nb_channels must be ≥ 1, got {nb_layers}, {nb_channels}")
        sources = len(SOURCES)
        self.nb_sources = sources
        self.nb_bins = nb_bins
        self.max_bins = max_bins
        self.nb_channels = nb_channels
        self.hidden_channels = hidden_channels

        # asteroid's convention: input_mean = −mean, input_scale = 1/std (per bin, shared by the channels)
        self.input_mean = nn.Parameter(torch.zeros(sources, max_bins))
        self.input_scale = nn.Parameter(torch.ones(sources, max_bins))

        self.encoder = PerSourceLinear(sources, nb_channels * max_bins, hidden_channels)
        self.encoder_bn: nn.Module = nn.BatchNorm1d(sources * hidden_channels)  # an identity once folded

        # one BiLSTM per source, all fed with the same bridged features
        self.lstms = nn.ModuleList(
            nn.LSTM(
                input_size=hidden_channels,
                hidden_size=hidden_channels // 2,
                num_layers=nb_layers,
                bidirectional=True,
                dropout=dropout if nb_layers > 1 else 0.0,
            )
            for _ in range(sources)
        )

        # first decoder layer: every source reads the same cross_2, so the four maps are one (S·H × 2H) matmul
        self.decoder1 = PerSourceLinear(sources, 2 * hidden_channels, hidden_channels)
        self.decoder1_bn: nn.Module = nn.BatchNorm1d(sources * hidden_channels)  # an identity once folded
        self.decoder2 = PerSourceLinear(sources, hidden_channels, nb_channels * nb_bins)
        self.decoder2_bn: nn.Module = nn.BatchNorm1d(sources * nb_channels * nb_bins)  # an identity once folded

        self.output_scale = nn.Parameter(torch.ones(sources, nb_bins))
        self.output_mean = nn.Parameter(torch.ones(sources, nb_bins))

        # set by fuse.fold_batchnorm for inference (not in a trained model's state dict): the folded biases,
        # (sources·hidden,), (sources·hidden,) and (sources, channels·bins, 1)
        self.encoder_bias: nn.Parameter | None
        self.decoder1_bias: nn.Parameter | None
        self.decoder2_bias: nn.Parameter | None
        self.register_parameter("encoder_bias", None)
        self.register_parameter("decoder1_bias", None)
        self.register_parameter("decoder2_bias", None)

    def forward(self, spec: Tensor) -> Tensor:
        """``(batch, channels, bins, frames)`` magnitude → ``(batch, sources, channels, bins, frames)`` masks ≥ 0."""
        batch, channels, bins, frames = spec.shape
        if channels != self.nb_channels or bins != self.nb_bins:
            raise ValueError(f"X_UMX expects (batch, {self.nb_channels}, {self.nb_bins}, frames), got {spec.shape}")
        cross_1 = self._bridge_1(spec)
        return self._masks(cross_1, self._lstm_mean(cross_1, batch, frames), batch, frames)

    def _bridge_1(self, spec: Tensor) -> Tensor:
        """The per-frame encoders, averaged over the sources: ``spec`` → ``(hidden, batch·frames)``."""
        batch, channels, frames = spec.shape[0], spec.shape[1], spec.shape[3]
        sources, hidden, max_bins = self.nb_sources, self.hidden_channels, self.max_bins
        n = batch * frames

        # (channels, max_bins, batch, frames)
        x = spec[:, :, :max_bins].permute(1, 2, 0, 3)
        encoder_bias = self.encoder_bias
        if encoder_bias is None:
            # normalised per source → (sources, channels·max_bins, batch·frames)
            x = (x.unsqueeze(0) + self.input_mean[:, None, :, None, None]) * self.input_scale[:, None, :, None, None]
            h = self.encoder(x.reshape(sources, channels * max_bins, n)).reshape(1, sources * hidden, n)
            h = self.encoder_bn(h)
        else:  # folded: the normalisation is in the weights, one product for all sources
            weight = self.encoder.weight.reshape(sources * hidden, channels * max_bins)
            h = torch.addmm(encoder_bias.unsqueeze(1), weight, x.reshape(channels * max_bins, n))
        h = torch.tanh(h).reshape(sources, hidden, n)
        return h.mean(0)  # bridge 1: (hidden, batch·frames)

    def _lstm_mean(self, cross_1: Tensor, batch: int, frames: int) -> Tensor:
        """The sources' BiLSTMs over the whole sequence, averaged: ``(hidden, batch·frames)``."""
        hidden = self.hidden_channels
        seq = cross_1.reshape(hidden, batch, frames).permute(2, 1, 0)  # time-major (frames, batch, hidden)
        lstm_sum = torch.zeros_like(seq)
        for lstm in self.lstms:
            lstm_sum = lstm_sum + lstm(seq)[0]
        return (lstm_sum / self.nb_sources).permute(2, 1, 0).reshape(hidden, batch * frames)

    def _masks(self, cross_1: Tensor, lstm_mean: Tensor, batch: int, frames: int) -> Tensor:
        """The per-frame decoders: both ``(hidden, batch·frames)`` → ``(batch, sources, channels, bins, frames)``."""
        sources, hidden, channels, bins = self.nb_sources, self.hidden_channels, self.nb_channels, self.nb_bins
        n = batch * frames
        cross_2 = torch.cat([cross_1, lstm_mean], 0)  # bridge 2: (2·hidden, batch·frames)

        weight = self.decoder1.weight.reshape(sources * hidden, 2 * hidden)
        decoder1_bias = self.decoder1_bias
        if decoder1_bias is None:
            y = self.decoder1_bn(torch.mm(weight, cross_2).unsqueeze(0))
        else:
            y = torch.addmm(decoder1_bias.unsqueeze(1), weight, cross_2)
        y = F.relu(y).reshape(sources, hidden, n)
        decoder2_bias = self.decoder2_bias
        if decoder2_bias is None:
            y = self.decoder2(y).reshape(1, sources * channels * bins, n)
            y = self.decoder2_bn(y).reshape(sources, channels, bins, batch, frames)
            y = y * self.output_scale[:, None, :, None, None] + self.output_mean[:, None, :, None, None]
        else:
            y = torch.baddbmm(decoder2_bias, self.decoder2.weight, y).reshape(sources, channels, bins, batch, frames)
        return F.relu(y).permute(3, 0, 1, 2, 4).contiguous()

    def forward_chunked(self, spec: Tensor, chunk: int = 512) -> Tensor:
        """:meth:`forward`'s masks (to float rounding) with its per-frame layers run on ``chunk`` frames at a time:
        only the BiLSTMs see the whole sequence (``hidden`` values per frame), so no whole-input activation but
        the result ``(batch, sources, channels, bins, frames)`` exists (on a whole song, :meth:`forward` holds
        about three times the result's size). Not part of the scripted model (forward does not call it)."""
        batch, channels, bins, frames = spec.shape
        if channels != self.nb_channels or bins != self.nb_bins:
            raise ValueError(f"X_UMX expects (batch, {self.nb_channels}, {self.nb_bins}, frames), got {spec.shape}")
        if chunk < 1:
            raise ValueError(f"X_UMX.forward_chunked: chunk must be >= 1 frame, got {chunk}")
        spans = [(a, min(a + chunk, frames)) for a in range(0, frames, chunk)]
        # (hidden, batch, frames): the per-frame columns are batch-major within a chunk, as in forward
        cross_1 = torch.cat(
            [self._bridge_1(spec[..., a:b]).reshape(self.hidden_channels, batch, b - a) for a, b in spans], -1
        )
        lstm_mean = self._lstm_mean(cross_1.reshape(self.hidden_channels, -1), batch, frames)
        lstm_mean = lstm_mean.reshape(self.hidden_channels, batch, frames)
        out = spec.new_empty(batch, self.nb_sources, channels, bins, frames)
        for a, b in spans:
            n = batch * (b - a)
            out[..., a:b] = self._masks(
                cross_1[..., a:b].reshape(-1, n), lstm_mean[..., a:b].reshape(-1, n), batch, b - a
            )
        return out
