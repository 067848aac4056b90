"""The original Danna-Sep release's three networks, rebuilt from the reference as test fixtures.

Written from ``reference-danna-sep.md`` §6–§8 and ``released-checkpoints.md``, not from the original code. Attribute
names are the release's, so ``torch.jit.script(model).state_dict()`` has the keys, shapes and dtypes of the released
files (``tests/data/released_checkpoints.tsv``) and ``original_name`` is the class name. The computations keep the
release's quirks: ``.view`` on X-UMX's input, the −1e-9 attention "mask", a U-Net that covers only
``2·⌊max_bins/2⌋ − 1`` bins and ``2·⌊T/2⌋ − 1`` frames (the rest is a constant 0.25 mask), a Demucs without
valid-length padding (shorter output, aligned at the start) and skips trimmed to their first samples::

    X_UMX        |X| (B,2,2049,T) ─crop─ +mean ×scale ─ affine1 ─ mean over sources ─ 4 BiLSTM ─ average
                 ─ cat(cross_1, average) ─ affine2 ─ ×output_scale +output_means ─ ReLU ─▶ masks (B,4,2,2049,T)
    UNetAttn     |X| ─crop─ 6 × [D3 ─ AvgPool] ─ cat(x, attn(x)) ─ 5 × [D3 ─ ConvT ─ BN ─ ReLU ─ pad ─ cat skip]
                 ─ end ─ sigmoid ─ pad with 0.25 ─▶ masks (B,4,2,2049,T)
    DemucsSplit  wav (B,2,L) ─ standardise ─ ×2 resample ─ 6 × encoder ─ BiLSTM ─ Linear
                 ─ 6 × [pre-conv + 1×1(skip) ─ GLU per source ─ ConvT] ─ ÷2 resample ─ de-standardise ─▶ (B,4,2,L')

:func:`randomize` gives any of them deterministic random weights whose outputs are not degenerate.
"""

from __future__ import annotations

import math

import julius
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pipeline import SAMPLE_RATE, spectrogram

SOURCES = 4  # drums, bass, other, vocals


class X_UMX(nn.Module):
    """Model 1 (§6.1): X-UMX with grouped 1×1 convolutions and one BiLSTM per source.

    ``forward(spec)``: magnitude ``(batch, nb_channels, n_fft//2 + 1, frames)``, contiguous (it is reshaped with
    ``.view``, as in the release) → masks ``(batch, 4, nb_channels, n_fft//2 + 1, frames)``, ≥ 0.
    """

    def __init__(
        self,
        n_fft: int = 4096,
        hidden_channels: int = 512,
        max_bins: int = 1487,
        nb_channels: int = 2,
        nb_layers: int = 3,
    ) -> None:
        super().__init__()
        nb_bins = n_fft // 2 + 1
        hidden = hidden_channels
        self.max_bins = max_bins
        self.input_means = nn.Parameter(torch.zeros(SOURCES * max_bins))
        self.input_scale = nn.Parameter(torch.ones(SOURCES * max_bins))
        self.output_means = nn.Parameter(torch.zeros(SOURCES * nb_bins))
        self.output_scale = nn.Parameter(torch.ones(SOURCES * nb_bins))
        self.affine1 = nn.Sequential(
            nn.Conv1d(SOURCES * nb_channels * max_bins, SOURCES * hidden, 1, groups=SOURCES, bias=False),
            nn.BatchNorm1d(SOURCES * hidden),
            nn.Tanh(),
        )
        dropout = 0.4 if nb_layers > 1 else 0.0  # torch warns about dropout on a single layer
        self.bass_lstm = nn.LSTM(hidden, hidden // 2, nb_layers, dropout=dropout, bidirectional=True)
        self.drums_lstm = nn.LSTM(hidden, hidden // 2, nb_layers, dropout=dropout, bidirectional=True)
        self.vocals_lstm = nn.LSTM(hidden, hidden // 2, nb_layers, dropout=dropout, bidirectional=True)
        self.other_lstm = nn.LSTM(hidden, hidden // 2, nb_layers, dropout=dropout, bidirectional=True)
        self.affine2 = nn.Sequential(
            nn.Conv1d(2 * hidden, SOURCES * hidden, 1, bias=False),
            nn.BatchNorm1d(SOURCES * hidden),
            nn.ReLU(),
            nn.Conv1d(SOURCES * hidden, SOURCES * nb_channels * nb_bins, 1, groups=SOURCES, bias=False),
            nn.BatchNorm1d(SOURCES * nb_channels * nb_bins),
        )

    def forward(self, spec: Tensor) -> Tensor:
        batch, channels, bins, frames = spec.shape
        spec = spec[..., : self.max_bins, :]
        x = (spec.unsqueeze(1) + self.input_means.view(4, 1, -1, 1)) * self.input_scale.view(4, 1, -1, 1)
        x = x.view(batch, -1, frames)  # (batch, sources·channels·max_bins, frames); fails on transposed inputs
        cross_1 = self.affine1(x).view(batch, 4, -1, frames).mean(1).permute(2, 0, 1)  # (frames, batch, hidden)
        average = (
            self.bass_lstm(cross_1)[0]
            + self.drums_lstm(cross_1)[0]
            + self.vocals_lstm(cross_1)[0]
            + self.other_lstm(cross_1)[0]
        ) * 0.25
        cross_2 = torch.cat([cross_1, average], 2).permute(1, 2, 0)  # (batch, 2·hidden, frames)
        mask = self.affine2(cross_2).view(batch, 4, channels, bins, frames)
        mask = mask * self.output_scale.view(4, 1, -1, 1) + self.output_means.view(4, 1, -1, 1)
        return mask.relu()


class D2_block(nn.Module):
    """Memory-efficient multi-dilated dense block (§7.1): ``(B, in_channels, F, T)`` → ``(B, k·last_n_layers, F, T)``.

    Layer ``i`` convolves only the previous layer's output (the block input for ``i = 0``) into ``L − i`` pieces of
    ``k`` channels, dilation ``2**i``: piece 0 joins layer ``i``'s own pre-activation, piece ``j`` is accumulated
    into layer ``i + j``'s. Each pre-activation goes through BN + ReLU; the output is the last layers' outputs.
    """

    def __init__(self, in_channels: int, k: int, L: int, last_n_layers: int | None = None) -> None:
        super().__init__()
        self.L = L
        self.last_n_layers = L if last_n_layers is None else min(L, last_n_layers)
        self.conv_layers = nn.ModuleList(
            [
                nn.Conv2d(k if i else in_channels, k * (L - i), 3, padding=2**i, dilation=2**i, bias=False)
                for i in range(L)
            ]
        )
        self.bn_layers = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(k), nn.ReLU()) for _ in range(L)])

    def forward(self, x: Tensor) -> Tensor:
        outputs: list[Tensor] = []
        pending: list[Tensor] = []  # pending[j]: what earlier layers have added to layer i + j's pre-activation
        i = 0
        for conv, bn in zip(self.conv_layers, self.bn_layers):  # noqa: B905 (TorchScript's zip takes no strict)
            pieces = conv(x).chunk(self.L - i, 1)
            if i == 0:
                pre = pieces[0]
                pending = pieces[1:]
            else:
                pre = pieces[0] + pending[0]
                pending = [acc + piece for acc, piece in zip(pending[1:], pieces[1:])]  # noqa: B905 (TorchScript)
            x = bn(pre)
            outputs.append(x)
            i += 1  # noqa: SIM113 (TorchScript cannot enumerate a zip of module lists)
        return torch.cat(outputs[len(outputs) - self.last_n_layers :], 1)


class D3_block(nn.Module):
    """``M`` D2 blocks, each fed the input and the earlier blocks' outputs (§7.2):
    ``(B, in_channels, F, T)`` → ``(B, in_channels + M·k·last_n_layers, F, T)``."""

    def __init__(self, in_channels: int, M: int = 2, k: int = 12, L: int = 3, last_n_layers: int | None = None) -> None:
        super().__init__()
        last = L if last_n_layers is None else min(L, last_n_layers)
        self.d2_layers = nn.ModuleList([D2_block(in_channels + m * k * last, k, L, last) for m in range(M)])

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for d2 in self.d2_layers:
            features.append(d2(torch.cat(features, 1)))
        return torch.cat(features, 1)


class MultiHeadAttention(nn.Module):
    """2-D local attention (§7.4): ``(B, in_channels, F, T)`` → ``(B, out_channels, F, T)``.

    Query blocks are all ``F`` rows × ``query_shape`` frames; each attends to all rows × ``query_shape +
    2·memory_flange`` frames around it (zero keys outside the padded time axis). Keys whose depth vector is all
    zero get the release's bias of −1e-9 (meant as −1e9, so in effect unmasked). No positional encoding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        d_model: int,
        n_heads: int = 8,
        query_shape: int = 2,
        memory_flange: int = 3,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.depth = d_model // n_heads
        self.scale = float((d_model / n_heads) ** -0.5)
        self.query_shape = query_shape
        self.memory_flange = memory_flange
        self.qkv_conv = nn.Conv2d(in_channels, 3 * d_model, 3, padding=1)
        self.out_conv = nn.Conv2d(d_model, out_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, bins, frames = x.shape
        heads, depth, size, flange = self.n_heads, self.depth, self.query_shape, self.memory_flange
        qkv = F.pad(self.qkv_conv(x), [0, (size - frames % size) % size])
        padded = qkv.shape[-1]
        blocks = padded // size
        width = size + 2 * flange
        q, k, v = qkv.view(batch, heads, 3 * depth, bins, padded).chunk(3, 2)  # (B, heads, depth, F, padded)
        q = q * self.scale
        k = F.pad(k, [flange, flange])
        v = F.pad(v, [flange, flange])
        # (B, heads, depth, F, blocks, size | width) → (B, heads, blocks, F·size | F·width, depth)
        q = q.reshape(batch, heads, depth, bins, blocks, size).permute(0, 1, 4, 3, 5, 2)
        q = q.reshape(batch, heads, blocks, bins * size, depth)
        k = k.unfold(-1, width, size).permute(0, 1, 4, 3, 5, 2).reshape(batch, heads, blocks, bins * width, depth)
        v = v.unfold(-1, width, size).permute(0, 1, 4, 3, 5, 2).reshape(batch, heads, blocks, bins * width, depth)
        logits = q @ k.transpose(-1, -2)  # (B, heads, blocks, F·size, F·width)
        logits = logits + (k == 0).all(-1).unsqueeze(-2).to(logits.dtype) * -1e-9
        out = logits.softmax(-1) @ v  # (B, heads, blocks, F·size, depth)
        out = out.view(batch, heads, blocks, bins, size, depth).permute(0, 1, 5, 3, 2, 4)
        out = out.reshape(batch, heads * depth, bins, padded)
        return self.out_conv(out[..., :frames])


class UNetAttn(nn.Module):
    """Model 2 (§7): a D3 U-Net with 2-D local attention at the bottleneck.

    ``forward(spec)``: magnitude ``(batch, in_channels, bins, frames)`` (no normalisation; ``frames`` ≥ 2**layers,
    or a pooling fails, as in the release) → masks ``(batch, 4, in_channels, bins, frames)`` in (0, 1); the bins
    from ``2·⌊max_bins/2⌋ − 1`` and the frames from ``2·⌊frames/2⌋ − 1`` on are exactly 0.25.
    """

    def __init__(
        self,
        in_channels: int = 2,
        max_bins: int = 1487,
        k: int = 12,
        layers: int = 6,
        d_model: int = 128,
        n_heads: int = 8,
        attn_channels: int = 256,
    ) -> None:
        super().__init__()
        self.max_bins = max_bins
        sizes = [max(2, 5 - i) for i in range(layers)]  # D2 depth L of each level
        widths = [in_channels]  # widths[i + 1]: output channels of level i (122, 218, 290, 338, 386, 434)
        for L in sizes:
            widths.append(widths[-1] + 2 * k * L)
        self.down_convs = nn.ModuleList(
            [nn.Sequential(D3_block(widths[i], 2, k, L), nn.AvgPool2d(2, 2)) for i, L in enumerate(sizes)]
        )
        self.attn = nn.Sequential(
            MultiHeadAttention(widths[-1], attn_channels, d_model, n_heads),
            nn.BatchNorm2d(attn_channels),
            nn.ReLU(),
            MultiHeadAttention(attn_channels, attn_channels, d_model, n_heads),
            nn.BatchNorm2d(attn_channels),
            nn.ReLU(),
        )
        up = []
        channels = widths[-1] + attn_channels
        for step, level in enumerate(range(layers - 2, -1, -1)):
            L, skip = sizes[level], widths[level + 1]
            block: list[nn.Module] = [
                D3_block(channels, 2, k, L),
                nn.ConvTranspose2d(channels + 2 * k * L, skip, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(skip),
                nn.ReLU(),
            ]
            if step < 3:
                block.append(nn.Dropout2d(0.4))
            up.append(nn.Sequential(*block))
            channels = 2 * skip
        self.up_convs = nn.ModuleList(up)
        self.end = nn.Sequential(
            nn.ConvTranspose2d(channels, widths[1], 5, 2, 2, bias=False),
            nn.BatchNorm2d(widths[1]),
            nn.ReLU(),
            nn.Conv2d(widths[1], SOURCES * in_channels, 3, padding=2, dilation=2),
        )

    def forward(self, spec: Tensor) -> Tensor:
        batch, channels, bins, frames = spec.shape
        x = spec[:, :, : self.max_bins]
        skips: list[Tensor] = []
        for down in self.down_convs:
            x = down(x)
            skips.append(x)
        skips.pop()  # the deepest level feeds the attention, not a skip
        x = torch.cat([x, self.attn(x)], 1)
        for up in self.up_convs:
            skip = skips.pop()
            x = up(x)
            x = F.pad(x, [0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]])
            x = torch.cat([x, skip], 1)
        x = torch.sigmoid(self.end(x))
        x = F.pad(x, [0, frames - x.shape[3], 0, bins - x.shape[2]], value=0.25)
        return x.view(batch, 4, channels, bins, frames)


def source_glu(x: Tensor, sources: int) -> Tensor:
    """GLU within each source's channel group: ``(B, sources·2c, T)`` → ``(B, sources·c, T)``, ``a·sigmoid(b)``
    with ``a``, ``b`` the first and second halves of each source's ``2c`` channels."""
    batch, _, frames = x.shape
    a, b = x.view(batch, sources, -1, frames).chunk(2, 2)
    return (a * b.sigmoid()).view(batch, -1, frames)


def rescale_conv(module: nn.Module, reference: float) -> None:
    """Demucs' init: every Conv1d / ConvTranspose1d weight (and bias) divided by ``sqrt(std(weight) / reference)``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            with torch.no_grad():
                scale = (m.weight.std() / reference) ** 0.5
                m.weight.div_(scale)
                if m.bias is not None:
                    m.bias.div_(scale)


class DemucsSplit(nn.Module):
    """Model 3 (§8): Demucs v2 with one decoder per source (all decoder convolutions grouped by source).

    ``forward(wav)``: ``(batch, audio_channels, L)`` at 44.1 kHz → ``(batch, sources, audio_channels, L')`` with
    ``L' ≤ L`` (no valid-length padding; the output is aligned with the input's start).
    """

    def __init__(
        self,
        channels: int = 48,
        depth: int = 6,
        kernel_size: int = 8,
        stride: int = 4,
        rescale: float = 0.1,
        resample: bool = True,
        lstm_layers: int = 2,
        growth: int = 2,
        audio_channels: int = 2,
        sources: int = SOURCES,
    ) -> None:
        super().__init__()
        self.sources = sources
        self.audio_channels = audio_channels
        self.up_sample = julius.ResampleFrac(1, 2) if resample else nn.Identity()
        self.down_sample = julius.ResampleFrac(2, 1) if resample else nn.Identity()
        widths = [channels * growth**i for i in range(depth)]  # 48 … 1536
        self.encoder = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv1d(widths[i - 1] if i else audio_channels, ch, kernel_size, stride),
                    nn.ReLU(),
                    nn.Conv1d(ch, 2 * ch, 1),
                    nn.GLU(1),
                )
                for i, ch in enumerate(widths)
            ]
        )
        deepest_first = widths[::-1]
        self.convs_1x1 = nn.ModuleList([nn.Conv1d(ch, 4 * ch, 3, padding=1, bias=False) for ch in deepest_first])
        self.dec_pre_convs = nn.ModuleList(
            [nn.Conv1d(2 * ch, 4 * ch, 3, padding=1, groups=sources) for ch in deepest_first]
        )
        decoder = []
        for level, ch in enumerate(deepest_first):
            last = level == depth - 1
            conv = nn.ConvTranspose1d(
                2 * ch, sources * audio_channels if last else ch, kernel_size, stride, groups=sources
            )
            decoder.append(nn.Sequential(conv) if last else nn.Sequential(conv, nn.ReLU()))
        self.decoder = nn.ModuleList(decoder)
        self.lstm = nn.LSTM(widths[-1], widths[-1], lstm_layers, bidirectional=True)
        self.lstm_linear = nn.Linear(2 * widths[-1], 2 * widths[-1])
        rescale_conv(self, rescale)

    def forward(self, wav: Tensor) -> Tensor:
        batch = wav.shape[0]
        mono = wav.mean(1, keepdim=True)
        mean = mono.mean(-1, keepdim=True)
        std = mono.std(-1, keepdim=True) + 1e-5
        x = self.up_sample((wav - mean) / std)
        saved: list[Tensor] = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        x = self.lstm(x.permute(2, 0, 1))[0]  # time-major (T, batch, 2·C)
        x = self.lstm_linear(x).permute(1, 2, 0)  # (batch, 2·C, T)
        for pre, conv_1x1, decode in zip(self.dec_pre_convs, self.convs_1x1, self.decoder):  # noqa: B905 (TorchScript)
            skip = saved.pop()
            x = pre(x) + conv_1x1(skip[..., : x.shape[-1]])
            x = decode(source_glu(x, self.sources))
        # one signal at a time: the same values (torch.equal) as one call, whose oneDNN convolution on
        # (8, 1, L) is slower: julius.ResampleFrac(2, 1) on torch.randn(1, 8, 5289300) (a 60 s clip), 1 thread,
        # took 3.9–7.1 s in one call and 1.2 s in eight
        signals = x.reshape(-1, x.shape[-1]).split(1)
        x = torch.cat([self.down_sample(signal) for signal in signals], 0).view(batch, x.shape[1], -1)
        x = x * std + mean
        return x.view(batch, self.sources, self.audio_channels, -1)


# ---------------------------------------------------------------------------------------------------------------
# deterministic random weights


def example_mix(samples: int, seed: int = 0) -> Tensor:
    """A music-like stereo signal ``(2, samples)`` at 44.1 kHz, RMS 0.1: panned harmonic tones with slow tremolo
    and decaying noise bursts every half second. The calibration input of :func:`randomize`."""
    g = torch.Generator().manual_seed(seed)

    def uniform():
        return float(torch.rand((), generator=g, dtype=torch.float64))

    t = torch.arange(samples, dtype=torch.float64) / SAMPLE_RATE
    mix = torch.zeros(2, samples)
    for _ in range(6):
        phase = 2 * math.pi * torch.frac(55 * 2 ** (4 * uniform()) * t).float() + 6.3 * uniform()  # 55 … 880 Hz
        tone, previous, current, cos = torch.zeros(samples), torch.zeros(samples), phase.sin(), 2 * phase.cos()
        for h in range(1, 6):  # sawtooth-like: Σ sin(h·phase) / h, by sin((h+1)x) = 2 cos x sin(hx) − sin((h−1)x)
            tone += current / h
            previous, current = current, cos * current - previous
        tremolo = 0.6 + 0.4 * torch.sin(2 * math.pi * torch.frac((0.2 + uniform()) * t)).float()
        pan = uniform()
        mix += torch.tensor([[pan], [1 - pan]]) * (tone * tremolo)
    bursts = torch.exp(-20 * (t % 0.5)).float() * torch.randn(2, samples, generator=g)
    mix += 3 * bursts
    return 0.1 * mix / mix.square().mean().sqrt()


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give ``model`` (one of the three, eager) deterministic random weights with non-degenerate outputs; → it, in eval.

    1. From ``torch.Generator().manual_seed(seed)``, module by module: convolution / linear weights
       ~ N(0, 1/fan_in) (fan_in per output sample, a transposed convolution's divided by its stride), their biases
       ~ N(0, 0.1²), LSTM weights and biases ~ U(±1/√hidden) (torch's own law), BatchNorm weights ~ U(0.5, 1.5) and
       biases ~ U(−0.5, 0.5). Resampling kernels stay as they are.
    2. Calibration on :func:`example_mix` (``seed``, 256 frames; Demucs 2 s), so the statistics fit an input of
       RMS ≈ 0.1: X-UMX's ``input_means`` / ``input_scale`` become −mean / 1/std of the crop's bins (each
       value × a log-uniform factor in [0.8, 1.25]), its ``output_scale`` ~ U(0.15, 0.3) and ``output_means``
       ~ U(0.3, 0.7); every BatchNorm's running mean / var become the statistics of its input on the example
       (one pass, BN layers alone in train mode with cumulative averaging), so no layer saturates.
       Demucs has no BatchNorm: one pass in which every convolution / linear layer divides its weights and bias
       by the RMS of its output, so each stage has unit RMS, then the last decoder is scaled so that the
       (standardised) sources have RMS 0.5, half the mixture's.
    The masks then have mean ≈ 0.5 and a wide spread; Demucs outputs have the input's order of magnitude (the
    bounds are checked in ``tests/test_original_release.py``).
    """
    if not isinstance(model, (X_UMX, UNetAttn, DemucsSplit)):
        raise TypeError(f"randomize: no calibration for {type(model).__name__}")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            _draw(module, g)
        if isinstance(model, DemucsSplit):
            _unit_rms(model, example_mix(2 * SAMPLE_RATE, seed).unsqueeze(0))
            return model.eval()
        # (1, 2, 2049, 256), made contiguous: the X-UMX cannot take the STFT's transposed layout
        mag = spectrogram(F.pad(example_mix(255 * 1024, seed), [0, 1024]))[1].unsqueeze(0).contiguous()
        if isinstance(model, X_UMX):
            crop = mag[:, :, : model.max_bins]

            def jitter(n):
                return torch.exp(torch.empty(n).uniform_(-0.22, 0.22, generator=g))

            model.input_means.copy_(-crop.mean((0, 1, 3)).repeat(SOURCES) * jitter(model.input_means.numel()))
            model.input_scale.copy_(
                (1 / (crop.std((0, 1, 3)) + 1e-3)).repeat(SOURCES) * jitter(model.input_scale.numel())
            )
            model.output_scale.uniform_(0.15, 0.3, generator=g)
            model.output_means.uniform_(0.3, 0.7, generator=g)
        _calibrate_batchnorm(model, mag)
    return model.eval()


def _draw(module: nn.Module, g: torch.Generator) -> None:
    """Step 1 of :func:`randomize` for ``module``'s own parameters."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
    elif isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        fan_in = module.weight.shape[0] // module.groups * module.weight[0, 0].numel() / math.prod(module.stride)
    elif isinstance(module, nn.LSTM):
        for p in module.parameters():
            p.uniform_(-(module.hidden_size**-0.5), module.hidden_size**-0.5, generator=g)
        return
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.weight.uniform_(0.5, 1.5, generator=g)
        module.bias.uniform_(-0.5, 0.5, generator=g)
        return
    else:
        return
    module.weight.normal_(0, fan_in**-0.5, generator=g)
    if module.bias is not None:
        module.bias.normal_(0, 0.1, generator=g)


def _calibrate_batchnorm(model: nn.Module, example: Tensor) -> None:
    """Set every BatchNorm's running statistics to those of its input when ``model`` runs on ``example``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one batch, that batch's statistics
        bn.train()
    model(example)
    for bn in norms:
        bn.momentum = 0.1
        bn.eval()


def _unit_rms(model: DemucsSplit, example: Tensor) -> None:
    """Scale each convolution / linear layer so that its output on ``example`` has RMS 1, then the last decoder
    so that the standardised sources have RMS 0.5."""
    last = model.decoder[-1][0]

    def rescale(module: nn.Module, inputs: object, output: Tensor) -> Tensor:
        factor = output.square().mean().sqrt()
        module.weight.div_(factor)
        if module.bias is not None:
            module.bias.div_(factor)
        return output / factor

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear))]
    hooks = [m.register_forward_hook(rescale) for m in layers]
    try:
        model.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    # the ÷2 resampling removes the random output's upper half-band: rescale the last layer on the final output
    mono = example.mean(1, keepdim=True)
    mean, std = mono.mean(-1, keepdim=True).unsqueeze(1), mono.std(-1, keepdim=True).unsqueeze(1) + 1e-5
    factor = ((model(example) - mean) / std).square().mean().sqrt() / 0.5
    last.weight.div_(factor)
    last.bias.div_(factor)
