"""DemucsSplit: a Demucs (v2 style) waveform U-Net whose decoder is four independent per-source decoders.

Data flow for a mixture ``(batch, channels, L)`` (reference configuration in brackets)::

    standardise by the mixture's mean/std ─▶ zero-pad (centred) to a valid length ─▶ ×2 sinc up-sampling
    ─▶ encoder: depth × [Conv1d(k 8, stride 4) ─ ReLU ─ Conv1d(1×1, ×2) ─ GLU]      (48 … 1536 channels)
    ─▶ BiLSTM (2 layers, hidden = deepest width) ─ Linear(2·C → sources·C/2)        (3072 → 3072)
    ─▶ decoder: depth × per-source [grouped Conv1d(k3) + dense skip Conv1d(k3) ─ GLU ─ grouped ConvTranspose1d]
    ─▶ ÷2 sinc down-sampling ─▶ crop the padding ─▶ undo the standardisation ─▶ (batch, sources, channels, L)

Every decoder convolution is grouped by source, so source ``j`` is computed from the shared encoder skips and
the ``j``-th quarter of the LSTM projection only; its per-source widths after the GLU are half the encoder widths
(768 … 24). Unlike the original, the input is padded to a length the strided convolutions divide exactly and the
output is cropped back, so the output has exactly the input's length for any ``L ≥ 1`` and no trailing samples
lose their estimate (inputs shorter than one bottom frame, 4778 samples in the reference configuration, are
zero-padded up to it). With exact lengths every skip matches its decoder input; skips are still centre-trimmed so
that any mismatch would stay centred instead of shifting the estimate.

``legacy=True`` computes what the original did (the released weights were trained that way and are imported with it):
no padding to a valid length, so the output is up to ~2k samples shorter than the input and aligned at its start,
and skips trimmed to their first samples instead of their centre.

Resampling uses julius' windowed-sinc filters (``ResampleFrac``), applied as a block convolution that is several
times faster on CPU (:class:`BlockResample`); the fixed kernels are not part of the ``state_dict``.
"""

from collections.abc import Iterator
from typing import NamedTuple

import julius
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .. import SOURCES
from ..errors import ConfigError


def standardize(mix: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Standardise each example by the mean and (unbiased) std of its channel-averaged signal.

    ``mix (batch, channels, samples)`` → ``(z, mean, std)`` with ``z`` of the same shape and ``mean``, ``std``
    of shape ``(batch, 1, 1)``; ``std`` already includes ``eps``, which keeps silence finite (and is the one
    departure from scale-equivariance). A single sample has std 0, not NaN.
    """
    mean, std = mix_statistics(mix, eps)
    return (mix - mean) / std, mean, std


def mix_statistics(mix: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The ``mean`` and ``std`` ``(batch, 1, 1)`` :func:`standardize` uses for ``mix (batch, channels, samples)``."""
    mono = mix.mean(dim=1, keepdim=True)
    mean = mono.mean(dim=-1, keepdim=True)
    dof = max(mix.shape[-1] - 1, 1)
    std = ((mono - mean).square().sum(dim=-1, keepdim=True) / dof).sqrt() + eps
    return mean, std


def destandardize(stems: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Inverse of :func:`standardize` for ``stems (batch, sources, channels, samples)``.

    ``mean`` and ``std`` are ``(batch, 1, 1)``.
    """
    return stems * std.unsqueeze(1) + mean.unsqueeze(1)


def center_trim(x: Tensor, length: int) -> Tensor:
    """Crop ``x (..., T ≥ length)`` to its central ``length`` samples (the extra sample, if odd, goes at the end)."""
    delta = x.shape[-1] - length
    return x[..., delta // 2 : delta // 2 + length]


def rescale_conv_(conv: nn.Conv1d | nn.ConvTranspose1d, reference: float) -> None:
    """Demucs' init: divide weight and bias by ``sqrt(std(weight) / reference)``.

    It pulls the weight std towards ``reference``.
    """
    with torch.no_grad():
        scale = (conv.weight.std() / reference).sqrt()
        conv.weight.div_(scale)
        if conv.bias is not None:
            conv.bias.div_(scale)


def _matrix_for_rows(matrix: Tensor, rows: int) -> Tensor:
    """``matrix (k, n)``, laid out for the fastest product ``(rows, k) @ matrix`` at a few rows.

    Such products read the whole matrix for a few rows each, and MKL's speed depends on its layout: with 2-3 rows
    it is fastest when each output column's k inputs are contiguous (a transposed view of an ``(n, k)`` matrix),
    from 4 rows on when each row is (``(k, n)`` contiguous), up to 2.4× apart (6144 × 1536, measured per layout);
    a single row runs as fast either way. Returns ``matrix`` itself when it already has the wanted layout (or for
    one row), else a copy in it.
    """
    if rows == 1:
        return matrix
    if rows <= 3:
        return matrix if matrix.stride(0) == 1 else matrix.t().contiguous().t()
    return matrix if matrix.stride(1) == 1 else matrix.contiguous()


def _lstm_steps(gates_x: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM direction from its input projections, step by step (zero initial state).

    ``gates_x (frames, batch, 4·hidden)`` (input projection plus both biases, gate order i, f, g, o as in
    ``nn.LSTM``) and ``w_hh (4·hidden, hidden)`` → hidden states and cell states ``(frames, batch, hidden)`` and
    the gate activations ``(frames, batch, 4·hidden)`` (sigmoid of i, f, o; tanh of g), which the backward pass
    of :class:`_LSTMRecurrence` reuses. At a few rows every step is bound by reading ``w_hh``, laid out for the
    batch size by :func:`_matrix_for_rows`.
    """
    frames, batch, _ = gates_x.shape
    hidden = w_hh.shape[1]
    h = gates_x.new_zeros(batch, hidden)
    c = gates_x.new_zeros(batch, hidden)
    hs = gates_x.new_empty(frames, batch, hidden)
    cs = gates_x.new_empty(frames, batch, hidden)
    acts = gates_x.new_empty(frames, batch, 4 * hidden)
    w_t = _matrix_for_rows(w_hh.t(), batch)
    for t in range(frames):
        gates = torch.addmm(gates_x[t], h, w_t)
        act = acts[t]
        torch.sigmoid(gates, out=act)  # i, f, ·, o; g is overwritten with tanh below
        torch.tanh(gates[:, 2 * hidden : 3 * hidden], out=act[:, 2 * hidden : 3 * hidden])
        i, f, g, o = act.chunk(4, dim=1)
        c = torch.addcmul(f * c, i, g)
        h = o * torch.tanh(c)
        cs[t] = c
        hs[t] = h
    return hs, cs, acts


class _LSTMRecurrence(torch.autograd.Function):
    """:func:`_lstm_steps` with a backward pass: ``(gates_x, w_hh)`` → hidden states ``(frames, batch, hidden)``.

    PyTorch's CPU LSTM backward also accumulates the weight gradients step by step (reading and writing a
    4·hidden² matrix per step); here the backward pass keeps the per-step gate gradients and forms the recurrent
    weight's gradient with one GEMM afterwards (the input weight's comes from the caller's ``F.linear`` over all
    frames), so it costs about one forward pass. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor) -> Tensor:
        hs, cs, acts = _lstm_steps(gates_x, w_hh)
        ctx.save_for_backward(w_hh, hs, cs, acts)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs: Tensor):
        w_hh, hs, cs, acts = ctx.saved_tensors
        frames, batch, hidden = hs.shape
        w = _matrix_for_rows(w_hh, batch)
        grad_gates = torch.empty_like(acts)
        dh = hs.new_zeros(batch, hidden)
        dc = hs.new_zeros(batch, hidden)
        for t in range(frames - 1, -1, -1):
            i, f, g, o = acts[t].chunk(4, dim=1)
            c_prev = cs[t - 1] if t > 0 else torch.zeros_like(dc)
            tanh_c = torch.tanh(cs[t])
            dh = dh + grad_hs[t]
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            di, df, dg, do = grad_gates[t].chunk(4, dim=1)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * c_prev, f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dg)
            torch.mul(dh * tanh_c, o * (1 - o), out=do)
            dc = dc * f
            dh = grad_gates[t] @ w
        h_prev = torch.cat([hs.new_zeros(1, batch, hidden), hs[:-1]])
        grad_w = grad_gates.reshape(-1, 4 * hidden).t() @ h_prev.reshape(-1, hidden)
        return grad_gates, grad_w


class BLSTM(nn.Module):
    """Bidirectional LSTM over time followed by a linear projection.

    ``(batch, dim, frames)`` → ``(batch, out_features, frames)``.

    On CPU, training and batched inference run the same ``nn.LSTM`` parameters step by step (:func:`_lstm_steps`,
    through :class:`_LSTMRecurrence` when gradients are needed): about 1.5× faster forward + backward at batch 1,
    and 2.2× faster inference at batch 2-3, where oneDNN's LSTM takes 2.2-2.7× its batch-1 time while a step's
    matrix product costs about the same for a few rows. The rest uses ``nn.LSTM``: inference at batch 1, autocast,
    other devices (cuDNN), and TorchScript but for batched CPU inference.
    """

    def __init__(self, dim: int, layers: int, out_features: int):
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(2, 0, 1)  # time-major (frames, batch, dim)
        x = self._lstm_by_steps(x) if self._use_steps(x) else self.lstm(x)[0]
        return self.linear(x).permute(1, 2, 0)

    def _use_steps(self, x: Tensor) -> bool:
        """Whether the time-major ``x (frames, batch, dim)`` is run step by step (see the class)."""
        if x.device.type != "cpu" or self.lstm.dropout != 0:
            return False
        if torch.jit.is_scripting():
            return x.shape[1] > 1 and not torch.is_grad_enabled()
        return self._eager_use_steps(x)

    @torch.jit.unused
    def _eager_use_steps(self, x: Tensor) -> bool:
        if torch.is_autocast_enabled("cpu"):
            return False
        w_hh = self.lstm.weight_hh_l0
        assert isinstance(w_hh, Tensor)
        training = torch.is_grad_enabled() and w_hh.requires_grad
        return training or x.shape[1] > 1

    def _lstm_by_steps(self, x: Tensor) -> Tensor:
        # nn.LSTM's own flat parameter list (its forward passes it to the kernel; TorchScript can read it too):
        # per layer and direction w_ih, w_hh, b_ih, b_hh
        weights = self.lstm._flat_weights
        for layer in range(self.lstm.num_layers):
            outputs: list[Tensor] = []
            for direction in range(2):
                first = 4 * (2 * layer + direction)
                w_ih, w_hh, b_ih, b_hh = weights[first], weights[first + 1], weights[first + 2], weights[first + 3]
                assert w_ih is not None and w_hh is not None and b_ih is not None and b_hh is not None
                inputs = x if direction == 0 else x.flip(0)
                gates_x = F.linear(inputs, w_ih, b_ih + b_hh)
                if torch.jit.is_scripting() or not torch.is_grad_enabled():
                    hs = _lstm_steps(gates_x, w_hh)[0]
                else:
                    hs = self._steps_with_grad(gates_x, w_hh)
                outputs.append(hs if direction == 0 else hs.flip(0))
            x = torch.cat(outputs, dim=-1)
        return x

    @torch.jit.unused
    def _steps_with_grad(self, gates_x: Tensor, w_hh: Tensor) -> Tensor:
        return _LSTMRecurrence.apply(gates_x, w_hh)


class BlockResample(nn.Module):
    """julius' ``ResampleFrac(old_sr, new_sr)`` with the same filter and output, computed as a block convolution.

    julius runs a ``Conv1d`` with one input channel, ``new_sr`` output channels and stride ``old_sr``, which the CPU
    backends run at a small fraction of their speed. Here ``block`` consecutive output frames are produced at once:
    the signal is cut into hops of ``old_sr·block`` samples that become the input channels, and the filter becomes a
    block-Toeplitz ``(block·new_sr, old_sr·block, taps)`` weight. That is ~1.5× the multiply-adds in a GEMM-shaped
    convolution; forward and backward are 3-7× faster. The edges are replicate-padded exactly as in julius.

    ``(..., samples)`` → ``(..., new_sr · samples // old_sr)`` (julius' default output length).
    """

    weight: Tensor

    def __init__(self, old_sr: int, new_sr: int, block: int = 16):
        super().__init__()
        ref = julius.ResampleFrac(old_sr, new_sr)  # reduces the ratio by the gcd and designs the filters
        self.old_sr, self.new_sr, self.block = ref.old_sr, ref.new_sr, block
        self.width = ref._width if ref.old_sr != ref.new_sr else 0
        assert isinstance(ref.kernel, Tensor)
        kernel = ref.kernel[:, 0] if ref.old_sr != ref.new_sr else torch.ones(1, 1)  # (new_sr, K)
        size = kernel.shape[-1]
        hop = self.old_sr * block
        self.taps = -(-(size + self.old_sr * (block - 1)) // hop)
        # output frame b of a block reads the hop-strided input from offset old_sr·b on
        flat = torch.zeros(block, self.new_sr, self.taps * hop)
        for b in range(block):
            flat[b, :, self.old_sr * b : self.old_sr * b + size] = kernel
        weight = flat.view(block * self.new_sr, self.taps, hop).transpose(1, 2).contiguous()
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        rows = x.reshape(-1, 1, length)
        out_length = self.new_sr * length // self.old_sr
        hop = self.old_sr * self.block
        per_block = self.new_sr * self.block
        # ceil division with positive operands: traced for ONNX, `//` becomes Div, which truncates toward zero
        blocks = max(1, (out_length + per_block - 1) // per_block)
        rows = F.pad(rows, (self.width, self.width + self.old_sr), mode="replicate")
        # zeros past julius' padding only reach output frames that are cropped
        rows = F.pad(rows, (0, hop * (blocks + self.taps - 1) - rows.shape[-1]))
        rows = rows.view(rows.shape[0], blocks + self.taps - 1, hop).transpose(1, 2)
        y = F.conv1d(rows, self.weight.to(rows.dtype))  # (rows, block·new_sr, blocks)
        y = y.transpose(1, 2).reshape(y.shape[0], -1)[:, :out_length]
        return y.reshape(x.shape[:-1] + (out_length,))  # noqa: RUF005 (TorchScript has no starred tuples)


class PhaseConvTranspose1d(nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` (no padding, no dilation; groups allowed) computed as one ordinary grouped ``Conv1d``.

    A transposed convolution with stride ``s`` is ``s`` interleaved ordinary convolutions, one per output phase
    ``r`` using the taps ``r, r + s, …``. Running them as a single convolution with ``s``× the output channels and
    interleaving the phases gives the same result from the same parameters, and is several times faster on CPU
    than PyTorch's grouped transposed convolution (which has no fast path there).

    The weight has to be rearranged on every call, which costs more than it saves for short inputs with large
    weights (the deepest levels), so inputs under ``min_frames`` frames use ``F.conv_transpose1d``.

    ``(batch, in_channels, T)`` → ``(batch, out_channels, (T − 1)·stride + kernel_size)``; an ``output_size`` (as in
    ``nn.ConvTranspose1d``: up to ``stride − 1`` more samples of output padding) also takes ``F.conv_transpose1d``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1, bias: bool = True
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.min_frames = 1024

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        stride, kernel, groups = self.stride[0], self.kernel_size[0], self.groups
        if output_size is not None:
            extra = self._output_padding(x, output_size, [stride], [0], [kernel], 1, [1])
            return F.conv_transpose1d(x, self.weight, self.bias, stride, 0, extra, groups)
        if x.shape[-1] < self.min_frames:
            return F.conv_transpose1d(x, self.weight, self.bias, stride, groups=groups)
        taps = (kernel + stride - 1) // stride
        weight = self.weight  # (in, out / groups, kernel)
        in_per_group, out_per_group = weight.shape[0] // groups, weight.shape[1]
        if taps * stride != kernel:
            weight = F.pad(weight, (0, taps * stride - kernel))
        # tap m·stride + r feeds phase r from x[t − m]: phases become output channels (group, out, phase), and the
        # taps are reversed because Conv1d correlates where the transposed convolution convolves
        weight = weight.view(groups, in_per_group, out_per_group, taps, stride).permute(0, 2, 4, 1, 3)
        weight = torch.flip(weight, [4]).reshape(groups * out_per_group * stride, in_per_group, taps)
        bias = self.bias
        if bias is not None:
            bias = bias.repeat_interleave(stride)
        y = F.conv1d(x, weight, bias, padding=taps - 1, groups=groups)  # (batch, out·stride, T + taps − 1)
        batch, _, frames = y.shape
        y = y.view(batch, groups * out_per_group, stride, frames).transpose(2, 3)
        y = y.reshape(batch, groups * out_per_group, frames * stride)
        return y[..., : (x.shape[-1] - 1) * stride + kernel]


class DecoderLevel(nn.Module):
    """One decoder level: ``sources`` independent decoders sharing the encoder's skip at this level.

    ``forward(x, skip)``: ``x (batch, sources·width, T)`` (each source's own features, source-major) and
    ``skip (batch, channels, T)`` → ``(batch, sources·out_per_source, (T − 1)·stride + kernel)``.
    ``width = channels // 2`` is the per-source width after the GLU.
    """

    def __init__(self, sources: int, channels: int, out_per_source: int, kernel_size: int, stride: int, last: bool):
        super().__init__()
        self.sources = sources
        self.width = channels // 2
        hidden = sources * 2 * self.width
        # each source: its own width → 2·width (GLU input); the skip is shared, so that conv is dense
        self.pre_conv = nn.Conv1d(sources * self.width, hidden, 3, padding=1, groups=sources)
        self.skip_conv = nn.Conv1d(channels, hidden, 3, padding=1, bias=False)
        self.deconv = PhaseConvTranspose1d(
            sources * self.width, sources * out_per_source, kernel_size, stride, groups=sources
        )
        self.last = last

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        h = self.pre_conv(x)
        h += self.skip_conv(skip)  # in place: neither convolution needs its output for backward
        batch, _, frames = h.shape
        # GLU within each source's block of 2·width channels
        h = F.glu(h.view(batch, self.sources, 2 * self.width, frames), dim=2)
        h = self.deconv(h.reshape(batch, self.sources * self.width, frames))
        if not self.last:
            h = F.relu_(h)
        return h

    def forward_span(self, x: Tensor, skip: Tensor, start: int, stop: int) -> Tensor:
        """:meth:`forward` on a time slice: ``x``, ``skip (batch, ·, n)`` are frames ``[s, s + n)`` of the whole
        level's inputs; the transposed convolution reads only the GLU frames ``[s + start, s + stop)``.

        Those frames are exact if the slice reaches one frame further on each side (or the level's edge, where
        the ``k3`` convolutions' zero padding is the whole input's). Returns the transposed convolution's output
        ``(batch, ·, (stop − start − 1)·stride + kernel)``, which starts at output frame ``(s + start)·stride``.
        Not part of the scripted model (only :meth:`DemucsSplit.forward_chunked` calls it).
        """
        h = self.pre_conv(x)
        h += self.skip_conv(skip)
        batch, _, frames = h.shape
        h = F.glu(h.view(batch, self.sources, 2 * self.width, frames)[..., start:stop], dim=2)
        h = self.deconv(h.reshape(batch, self.sources * self.width, stop - start))
        if not self.last:
            h = F.relu_(h)
        return h


class _Geometry(NamedTuple):
    """Every length of :meth:`DemucsSplit.forward` for one input length (see :meth:`DemucsSplit._geometry`)."""

    length: int  # input samples L
    padded: int  # samples after the zero padding to a valid length (legacy: L)
    left: int  # zeros before the input
    encoded: list[int]  # frames of the up-sampled input and of every encoder level's output: N_0 … N_depth
    decoded: list[int]  # frames of every decoder level's output, X_0 … X_depth (X_depth: the bottleneck's)
    offsets: list[int]  # where the skip of level l that decoder input X_l reads starts, per l (offsets[0] = 0)
    start: int  # the returned samples: [start, stop) of the down-sampled decoder output
    stop: int


class DemucsSplit(nn.Module):
    """Demucs (v2 style) with one decoder per source.

    Args:
        sources: number of sources (4: drums, bass, other, vocals).
        audio_channels: channels of the mixture and of each estimate.
        channels: width of the first encoder level; level ``i`` has ``int(channels · growth**i)``.
        depth: encoder/decoder levels.
        kernel_size, stride: of the strided encoder convolutions and the transposed decoder convolutions.
        growth: width factor between levels.
        lstm_layers: stacked BiLSTM layers in the bottleneck (0 = none: a 1×1 convolution then maps the
            encoder's output to the per-source decoder inputs).
        rescale: reference std of the :func:`rescale_conv_` init (0 = PyTorch's default init).
        resample: up-sample the input ×2 before the encoder and down-sample ÷2 after the decoder.
        legacy: the original computation (see the module docstring), for the released weights.

    ``forward``: waveform ``(batch, audio_channels, samples)`` → estimates ``(batch, sources, audio_channels,
    samples)`` with exactly the input's number of samples (``legacy``: at most as many, aligned at the start),
    sources in the order drums, bass, other, vocals.
    Batched CPU inference runs the convolutions item by item (same result, one item's activations at a time).
    """

    domain = "waveform"
    itemwise_batches = True  # see ModelInfo: the separator gives it several CPU segments per call

    def __init__(
        self,
        sources: int = len(SOURCES),
        audio_channels: int = 2,
        channels: int = 48,
        depth: int = 6,
        kernel_size: int = 8,
        stride: int = 4,
        growth: float = 2.0,
        lstm_layers: int = 2,
        rescale: float = 0.1,
        resample: bool = True,
        legacy: bool = False,
    ):
        super().__init__()
        for name, value, low in (
            ("sources", sources, 1),
            ("audio_channels", audio_channels, 1),
            ("channels", channels, 2),
            ("depth", depth, 1),
            ("stride", stride, 1),
            ("lstm_layers", lstm_layers, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"DemucsSplit.{name}: expected an integer >= {low}, got {value!r}")
        if not isinstance(kernel_size, int) or kernel_size < stride:
            raise ConfigError(f"DemucsSplit.kernel_size: expected an integer >= stride ({stride}), got {kernel_size!r}")
        if growth < 1:
            raise ConfigError(f"DemucsSplit.growth: expected >= 1, got {growth!r}")
        if rescale < 0:
            raise ConfigError(f"DemucsSplit.rescale: expected >= 0 (0 = off), got {rescale!r}")
        self.sources = sources
        self.audio_channels = audio_channels
        self.depth = depth
        self.kernel_size = kernel_size
        self.stride = stride
        self.resample = resample
        self.legacy = legacy
        # input samples per bottom frame: the output depends on where the signal sits modulo this
        self.grid = stride**depth // (2 if resample else 1)

        widths = [int(channels * growth**i) for i in range(depth)]
        self.encoder = nn.ModuleList()
        in_channels = audio_channels
        for width in widths:
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(in_channels, width, kernel_size, stride),
                    nn.ReLU(inplace=True),
                    nn.Conv1d(width, 2 * width, 1),
                    nn.GLU(dim=1),
                )
            )
            in_channels = width

        deepest = widths[-1]
        bottleneck_out = sources * (deepest // 2)  # every source's decoder input, source-major
        self.lstm = BLSTM(deepest, lstm_layers, bottleneck_out) if lstm_layers else None
        self.linear = None if lstm_layers else nn.Conv1d(deepest, bottleneck_out, 1)

        # deepest level first, in the order the forward pass uses them
        self.decoder = nn.ModuleList()
        for level in reversed(range(depth)):
            out_per_source = audio_channels if level == 0 else widths[level - 1] // 2
            self.decoder.append(DecoderLevel(sources, widths[level], out_per_source, kernel_size, stride, level == 0))

        self.upsample: nn.Module
        self.downsample: nn.Module
        if resample:
            self.upsample = BlockResample(1, 2)
            self.downsample = BlockResample(2, 1)
        else:
            self.upsample = nn.Identity()
            self.downsample = nn.Identity()

        if rescale:
            for module in self.modules():
                if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
                    rescale_conv_(module, rescale)

    @torch.jit.export
    def valid_length(self, length: int) -> int:
        """Smallest input length ``≥ length`` that every strided convolution divides exactly.

        The result is at least one frame deep.
        """
        factor = 2 if self.resample else 1
        frames = length * factor
        # ceil divisions written with non-negative operands: traced for ONNX, `//` truncates toward zero
        for _ in range(self.depth):
            # ceil((frames − kernel) / stride) + 1, at least 1
            frames = max(1, (frames - self.kernel_size + self.stride - 1) // self.stride + 1)
        for _ in range(self.depth):
            frames = (frames - 1) * self.stride + self.kernel_size
        return (frames + factor - 1) // factor

    def forward(self, mix: Tensor) -> Tensor:
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"DemucsSplit expects (batch, {self.audio_channels}, samples), got {list(mix.shape)}")
        length = mix.shape[-1]
        if mix.shape[0] == 1 or mix.device.type != "cpu" or torch.is_grad_enabled():
            code, skips, mean, std = self._encode(mix)
            return self._decode(self._bottleneck(code), skips, mean, std, length)
        # batched CPU inference: the convolutions item by item, the bottleneck on the whole batch. On CPU a batch
        # makes the convolutions no faster, only their activations (~1 GB per 10 s item) larger, while the BiLSTM's
        # steps cost about the same for a few rows as for one (2.5 s → 1.6 s per 3 items of 10 s, 2 threads)
        items = [self._encode(item.unsqueeze(0)) for item in mix.unbind(0)]
        codes = self._bottleneck(torch.cat([item[0] for item in items]))
        return torch.cat(
            [self._decode(codes[i : i + 1], item[1], item[2], item[3], length) for i, item in enumerate(items)]
        )

    def _encode(self, mix: Tensor) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
        """``mix (batch, channels, L)`` → the deepest features, every level's output (the skips, shallowest first)
        and the mixture's mean and std ``(batch, 1, 1)``."""
        length = mix.shape[-1]
        x, mean, std = standardize(mix)
        delta = 0 if self.legacy else self.valid_length(length) - length
        x = self.upsample(F.pad(x, (delta // 2, delta - delta // 2)))
        skips: list[Tensor] = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        return x, skips, mean, std

    def _bottleneck(self, x: Tensor) -> Tensor:
        """Deepest features ``(batch, C, T)`` → every source's decoder input ``(batch, sources·C/2, T)``."""
        if self.lstm is not None:
            return self.lstm(x)
        if self.linear is not None:
            return self.linear(x)
        return x

    def _decode(self, x: Tensor, skips: list[Tensor], mean: Tensor, std: Tensor, length: int) -> Tensor:
        """The bottleneck's output and :meth:`_encode`'s other results → ``(batch, sources, channels, length)``
        (``legacy``: ``length'`` ≤ ``length``).
        Empties ``skips`` as it goes, so that each is freed once used."""
        for decode in self.decoder:
            skip = skips.pop()
            x = decode(x, skip[..., : x.shape[-1]] if self.legacy else center_trim(skip, x.shape[-1]))
        x = self.downsample(x)
        if not self.legacy:
            delta = self.valid_length(length) - length
            x = x[..., delta // 2 : delta // 2 + length]
        return destandardize(x.reshape(x.shape[0], self.sources, self.audio_channels, x.shape[-1]), mean, std)

    # ------------------------------------------------------------------------------------------ chunked inference
    # Not part of the scripted model: nothing that forward calls reaches these methods.

    def forward_chunked(self, mix: Tensor, chunk: int = 1 << 18) -> Tensor:
        """:meth:`forward`'s result for ``mix (batch, channels, L)`` (to float rounding), computed in time chunks of
        ``chunk`` output samples: ``(batch, sources, channels, L)`` (``legacy``: ``L' ≤ L``).

        The concatenation of :meth:`iter_chunked`; memory use is that of a ``chunk``-sample input plus what
        the whole input needs at the bottleneck (see :meth:`iter_chunked`).
        """
        return torch.cat(list(self.iter_chunked(mix, chunk)), -1)

    def iter_chunked(self, mix: Tensor, chunk: int = 1 << 18) -> Iterator[Tensor]:
        """:meth:`forward`'s result for ``mix (batch, channels, L)``, as consecutive time pieces
        ``(batch, sources, channels, ≤ chunk)``, with no full-resolution activation of the whole input.

        The computation is :meth:`forward`'s, cut exactly: the mixture's mean and std are taken over the whole
        input; a first pass runs the encoder over chunks of the deepest level's frames (each from exactly the
        input samples its valid convolutions read) and keeps only the deepest features, and the BiLSTM runs on
        all of them at once (≈ 22 frames per second of audio in the reference configuration). Then every output
        chunk is decoded from the bottleneck frames, decoder frames and encoder skips it depends on (a
        transposed convolution's output frame ``t`` reads the inputs ``⌈(t − kernel + 1)/stride⌉ … ⌊t/stride⌋``,
        a ``k3`` convolution one frame either side, the resamplers ``width`` samples), the skips recomputed
        from the input rather than kept: the encoder runs about twice, the rest once plus a few frames of margin
        per level and chunk. Slices end only at the whole input's edges or beyond what the kept samples read, so
        the zero and replicate paddings are :meth:`forward`'s.
        """
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"DemucsSplit expects (batch, {self.audio_channels}, samples), got {list(mix.shape)}")
        if chunk < 1:
            raise ValueError(f"iter_chunked: chunk must be >= 1 sample, got {chunk}")
        g = self._geometry(mix.shape[-1])
        if g is None:  # too short for the unpadded convolutions (legacy): forward's own error
            yield self.forward(mix)
            return
        kernel, stride, depth = self.kernel_size, self.stride, self.depth
        factor = 2 if self.resample else 1
        mean, std = mix_statistics(mix)

        # pass 1: the deepest features, in chunks of about `chunk` input samples, and the bottleneck on all
        step = max(1, -(-chunk * factor // stride**depth))
        codes = [
            self._encode_span(mix, mean, std, g, {depth: (p, min(p + step, g.encoded[depth]))})[depth]
            for p in range(0, g.encoded[depth], step)
        ]
        code = torch.cat(codes, -1)
        del codes
        bottleneck = self._bottleneck(code)

        # pass 2: each output chunk from what it reads, level by level
        width = self.downsample.width if isinstance(self.downsample, BlockResample) else 0
        for a in range(g.start, g.stop, chunk):
            b = min(a + chunk, g.stop)
            # decoder output frames X_0[c, d) read by the down-sampling (output n reads 2n − width … 2n + width + 1);
            # an even start keeps the slice's output on the whole output's grid
            c, d = (2 * max(0, a - (width + 1) // 2), min(g.decoded[0], 2 * b + width)) if factor == 2 else (a, b)
            spans: list[tuple[int, int, int, int, int, int]] = []  # per level l: X_l[c, d) ← X_{l+1}[s, e), GLU[u0, u1)
            for level in range(depth):
                frames = g.decoded[level + 1]
                u0 = max(0, (c - kernel + stride) // stride)
                u1 = min(frames, (d - 1) // stride + 1)
                s, e = max(0, u0 - 1), min(frames, u1 + 1)
                spans.append((c, d, s, e, u0, u1))
                c, d = s, e
            needs = {lv + 1: (g.offsets[lv + 1] + sp[2], g.offsets[lv + 1] + sp[3]) for lv, sp in enumerate(spans)}
            deepest = needs.pop(depth)
            skips = self._encode_span(mix, mean, std, g, needs)
            skips[depth] = code[..., deepest[0] : deepest[1]]
            x = bottleneck[..., spans[-1][2] : spans[-1][3]]
            for i, decode in enumerate(self.decoder):
                level = depth - 1 - i
                c, d, s, e, u0, u1 = spans[level]
                assert isinstance(decode, DecoderLevel)
                x = decode.forward_span(x, skips.pop(level + 1), u0 - s, u1 - s)
                x = x[..., c - stride * u0 : d - stride * u0]
            c = spans[0][0]
            y = self.downsample(x)[..., a - c // factor : b - c // factor]
            yield destandardize(y.reshape(y.shape[0], self.sources, self.audio_channels, y.shape[-1]), mean, std)

    def _geometry(self, length: int) -> _Geometry | None:
        """The lengths :meth:`forward` goes through for an input of ``length`` samples; None where its unpadded
        (legacy) convolutions get fewer samples than their kernel."""
        factor = 2 if self.resample else 1
        padded = length if self.legacy else self.valid_length(length)
        encoded = [factor * padded]
        for _ in range(self.depth):
            if encoded[-1] < self.kernel_size:
                return None
            encoded.append((encoded[-1] - self.kernel_size) // self.stride + 1)
        decoded = [encoded[-1]]
        for _ in range(self.depth):
            decoded.insert(0, (decoded[0] - 1) * self.stride + self.kernel_size)
        # skips: legacy reads their first frames, otherwise their centre (center_trim)
        offsets = [0 if self.legacy else (n - m) // 2 for n, m in zip(encoded, decoded, strict=True)]
        left = (padded - length) // 2
        start, stop = (0, decoded[0] // factor) if self.legacy else (left, left + length)
        return _Geometry(length, padded, left, encoded, decoded, offsets, start, stop)

    def _padded_input(self, mix: Tensor, mean: Tensor, std: Tensor, g: _Geometry, start: int, stop: int) -> Tensor:
        """Samples ``[start, stop)`` of the standardised, zero-padded input ``(batch, channels, stop − start)``."""
        a = min(max(start - g.left, 0), g.length)
        b = min(max(stop - g.left, a), g.length)
        if a == b:
            return mix.new_zeros(mix.shape[0], mix.shape[1], stop - start)
        x = (mix[..., a:b] - mean) / std
        return F.pad(x, (a + g.left - start, stop - g.left - b))

    def _upsampled_span(self, mix: Tensor, mean: Tensor, std: Tensor, g: _Geometry, start: int, stop: int) -> Tensor:
        """Frames ``[start, stop)`` of the encoder's input: the padded input, up-sampled (output ``2n``, ``2n + 1``
        reads input ``n − width … n + width``; the slice's own replicate padding only at the input's edges)."""
        if not isinstance(self.upsample, BlockResample):
            return self._padded_input(mix, mean, std, g, start, stop)
        width = self.upsample.width
        a, b = max(0, start // 2 - width), min(g.padded, (stop - 1) // 2 + width + 1)
        return self.upsample(self._padded_input(mix, mean, std, g, a, b))[..., start - 2 * a : stop - 2 * a]

    def _encode_span(
        self, mix: Tensor, mean: Tensor, std: Tensor, g: _Geometry, needs: dict[int, tuple[int, int]]
    ) -> dict[int, Tensor]:
        """Frames ``needs[l] = (start, stop)`` of encoder level ``l``'s output (``1 … depth``), computed from
        exactly the input they read: ``{l: (batch, channels_l, stop − start)}``."""
        kernel, stride = self.kernel_size, self.stride
        # the frames each level computes: what is asked of it and what the level above reads, deepest first
        spans: dict[int, tuple[int, int]] = {}
        above: tuple[int, int] | None = None
        for level in range(self.depth, 0, -1):
            span = needs.get(level)
            if above is not None:
                span = above if span is None else (min(span[0], above[0]), max(span[1], above[1]))
            if span is not None:
                spans[level] = span
                above = (stride * span[0], stride * (span[1] - 1) + kernel)  # output t reads stride·t … + kernel
        if above is None:
            return {}
        x = self._upsampled_span(mix, mean, std, g, *above)
        first = above[0]
        out: dict[int, Tensor] = {}
        for level in range(1, self.depth + 1):
            if level not in spans:
                break  # nothing deeper is needed either
            span = spans[level]
            x = self.encoder[level - 1](x[..., stride * span[0] - first : stride * (span[1] - 1) + kernel - first])
            first = span[0]
            if level in needs:
                out[level] = x[..., needs[level][0] - first : needs[level][1] - first]
        return out
