"""U-Net of D3 blocks with 2-D local multi-head attention at the bottleneck (the competition's model 2).

Architecture as in the original ``UNetAttn`` (D3 encoder with average pooling, two local-attention layers whose
output is concatenated to the bottleneck, D3 decoder with transposed-conv up-sampling and skip concatenation,
sigmoid masks), with the original's defects fixed:

- padded keys in the attention are really masked (the original added −1e-9 instead of −1e9);
- the input is padded inside the model to a multiple of ``2**levels`` in bins and frames and every up-sampling is
  exactly ×2, so the masks cover **all** ``max_bins`` bins and **all** frames for any input length (the original
  covered 1485 bins and T − 1 frames and filled the rest with a constant 0.25);
- an optional relative position bias gives the attention a positional signal (the original had none).

``legacy=True`` computes exactly what the original did instead (the released weights were trained that way and are
imported with it): no input padding (odd sizes floor in the poolings), transposed convolutions without output
padding whose outputs are zero-padded up to their skips, unmasked attention, and masks over the first
``2·⌊max_bins/2⌋ − 1`` bins and ``2·⌊frames/2⌋ − 1`` frames only (1485 bins and 511 frames for 1487 and 512), the rest
set to 0.25.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import SOURCES
from ..errors import ConfigError
from .d3net import D2Block, D3Block


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    query_shape: int,
    memory_flange: int,
    length: int,
    bias: Tensor | None = None,
    mask: bool = True,
) -> tuple[Tensor, Tensor]:
    """Block-local attention in time, global in frequency.

    Frames are cut into query blocks of ``query_shape`` frames; every query in a block (all bins × the block's
    frames) attends to all bins of the block's frames plus ``memory_flange`` frames on each side.
    Keys outside ``[0, length)`` (the flanks beyond the edges, the pad to a multiple of ``query_shape`` and any
    frame at or after ``length``) get exactly zero weight. A query whose whole window is masked gets all-zero
    weights and a zero output (no NaN, in the forward or the backward pass).

    Args:
        q, k, v: (batch, heads, depth, bins, frames); ``q`` is used as is (scale it beforehand).
        length: number of valid frames (≤ frames).
        bias: optional additive logit bias (heads, bins·query_shape, bins·window), window = query_shape + 2·flange.
        mask: False gives the padded keys (zeros, so logit 0) their share of the softmax, as the original did:
            it meant to add −1e9 to their logits but added −1e-9, which leaves a float32 logit of 0 unchanged.

    Returns:
        out (batch, heads, depth, bins, frames) and the attention weights
        (batch, heads, blocks, bins·query_shape, bins·window), queries ordered (bin, frame-in-block) and keys
        (bin, frame-in-window), window frame ``j`` of block ``b`` being frame ``b·query_shape + j − flange``.
    """
    batch, heads, depth, bins, frames = q.shape
    # non-negative operands only: ONNX integer division and modulo truncate towards zero
    pad = (query_shape - frames % query_shape) % query_shape
    padded = frames + pad
    blocks = padded // query_shape
    window = query_shape + 2 * memory_flange

    q = F.pad(q, [0, pad])
    k = F.pad(k, [memory_flange, memory_flange + pad])
    v = F.pad(v, [memory_flange, memory_flange + pad])

    # window frame j of block b is padded frame b·query_shape + j; gathered with index_select (not unfold) so the
    # ONNX export keeps a dynamic number of frames. (blocks, window)
    index = torch.arange(blocks, device=q.device).unsqueeze(1) * query_shape + torch.arange(window, device=q.device)

    # (batch, heads, blocks, bins·query_shape, depth) and (batch, heads, blocks, bins·window, depth)
    q = q.reshape(batch, heads, depth, bins, blocks, query_shape).permute(0, 1, 4, 3, 5, 2)
    q = q.reshape(batch, heads, blocks, bins * query_shape, depth)
    k = k.index_select(-1, index.flatten()).reshape(batch, heads, depth, bins, blocks, window)
    k = k.permute(0, 1, 4, 3, 5, 2).reshape(batch, heads, blocks, bins * window, depth)
    v = v.index_select(-1, index.flatten()).reshape(batch, heads, depth, bins, blocks, window)
    v = v.permute(0, 1, 4, 3, 5, 2).reshape(batch, heads, blocks, bins * window, depth)

    logits = q @ k.transpose(-1, -2)
    if bias is not None:
        logits = logits + bias.unsqueeze(1)
    if not mask:
        weights = logits.softmax(-1)
        return _merge_blocks(weights @ v, bins, query_shape, frames), weights

    # validity depends only on a key's frame: (blocks, window) → (blocks, 1, bins·window)
    frame = index - memory_flange
    valid = (frame >= 0) & (frame < length)
    any_valid = valid.any(1, keepdim=True)  # (blocks, 1)
    # rows without any valid key keep finite logits so softmax stays finite; they are zeroed below
    keep = (valid | ~any_valid).unsqueeze(1).expand(blocks, bins, window).reshape(blocks, 1, bins * window)
    weights = logits.masked_fill(~keep, float("-inf")).softmax(-1)
    weights = weights * any_valid.unsqueeze(-1).to(weights.dtype)

    return _merge_blocks(weights @ v, bins, query_shape, frames), weights


def _merge_blocks(out: Tensor, bins: int, query_shape: int, frames: int) -> Tensor:
    """Per-block outputs (batch, heads, blocks, bins·query_shape, depth) → (batch, heads, depth, bins, frames)."""
    batch, heads, blocks, _, depth = out.shape
    out = out.reshape(batch, heads, blocks, bins, query_shape, depth).permute(0, 1, 5, 3, 2, 4)
    return out.reshape(batch, heads, depth, bins, blocks * query_shape)[..., :frames]


class LocalAttention2d(nn.Module):
    """2-D local multi-head self-attention over a (bins × frames) feature map.

    ``qkv`` comes from a 3×3 conv; each head's ``3·d_model/heads`` channels are ``[q | k | v]`` (the original's
    layout, so its weights map one to one). Queries are blocks of ``query_shape`` frames × all bins; they attend to
    all bins of the block plus ``memory_flange`` frames each side (see :func:`local_attention`). The head outputs
    go through a 3×3 conv to ``out_channels``.

    With ``rel_pos_bias`` every head adds a learned bias ``b_time[Δt] + b_freq[clip(Δf, ±max_rel_bins)]`` to its
    logits (Δ = key − query position; zero at initialisation, so it starts as the plain model).
    ``mask_padding=False`` lets the padded keys take softmax mass, as in the original (``legacy`` U-Nets).

    ``forward``: (batch, in_channels, bins, frames) → (batch, out_channels, bins, frames).
    """

    n_heads: int
    d_model: int
    query_shape: int
    memory_flange: int
    max_rel_bins: int
    mask_padding: bool

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        d_model: int = 128,
        n_heads: int = 8,
        query_shape: int = 2,
        memory_flange: int = 3,
        rel_pos_bias: bool = False,
        max_rel_bins: int = 32,
        mask_padding: bool = True,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"attention: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if query_shape < 1 or memory_flange < 0 or max_rel_bins < 0:
            raise ConfigError(
                "attention: need query_shape >= 1, memory_flange >= 0 and max_rel_bins >= 0, got "
                f"{query_shape}, {memory_flange}, {max_rel_bins}"
            )
        self.n_heads = n_heads
        self.d_model = d_model
        self.query_shape = query_shape
        self.memory_flange = memory_flange
        self.max_rel_bins = max_rel_bins
        self.mask_padding = mask_padding
        self.qkv = nn.Conv2d(in_channels, 3 * d_model, 3, padding=1)
        self.out_conv = nn.Conv2d(d_model, out_channels, 3, padding=1, bias=False)
        if rel_pos_bias:
            # Δt ranges over [−(flange + query_shape − 1), flange + query_shape − 1]
            self.time_bias = nn.Parameter(torch.zeros(n_heads, 2 * (query_shape + memory_flange) - 1))
            self.freq_bias = nn.Parameter(torch.zeros(n_heads, 2 * max_rel_bins + 1))
        else:
            self.register_parameter("time_bias", None)
            self.register_parameter("freq_bias", None)

    def position_bias(self, bins: int, device: torch.device) -> Tensor | None:
        """Logit bias (heads, bins·query_shape, bins·window), or None without ``rel_pos_bias``."""
        time_bias = self.time_bias
        freq_bias = self.freq_bias
        if time_bias is None or freq_bias is None:
            return None
        window = self.query_shape + 2 * self.memory_flange
        dt = torch.arange(window, device=device).unsqueeze(0) - torch.arange(self.query_shape, device=device).unsqueeze(
            1
        )
        dt = dt + self.query_shape - 1  # Δt = (j − flange) − i, shifted to start at 0
        f = torch.arange(bins, device=device)
        df = (f.unsqueeze(0) - f.unsqueeze(1)).clamp(-self.max_rel_bins, self.max_rel_bins) + self.max_rel_bins
        bias = freq_bias[:, df].reshape(-1, bins, 1, bins, 1) + time_bias[:, dt].reshape(
            -1, 1, self.query_shape, 1, window
        )
        return bias.reshape(-1, bins * self.query_shape, bins * window)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, bins, frames = x.shape
        depth = self.d_model // self.n_heads
        qkv = self.qkv(x).reshape(batch, self.n_heads, 3 * depth, bins, frames)
        q, k, v = qkv.split(depth, 2)
        out, _ = local_attention(
            q * depth**-0.5,
            k,
            v,
            self.query_shape,
            self.memory_flange,
            frames,
            self.position_bias(bins, x.device),
            self.mask_padding,
        )
        return self.out_conv(out.reshape(batch, self.d_model, bins, frames))


class UNetAttn(nn.Module):
    """D3 U-Net with 2-D local attention: magnitude (batch, channels, bins, frames) → masks
    (batch, 4, channels, bins, frames) in [0, 1], sources drums, bass, other, vocals; any ``bins`` and ``frames`` ≥ 1.

    Input is the raw linear magnitude ``|X|``. The first ``max_bins`` bins are zero-padded to a multiple of
    ``2**levels`` bins and the frames to a multiple of ``2**levels`` frames (zeros = silence); the masks are cropped
    back, so every bin below ``max_bins`` and every frame is predicted by the network.

    Encoder level ``i``: ``D3Block(L = max(2, levels − 1 − i))`` then 2×2 average pooling; skips are the pooled
    outputs of all but the last level. Bottleneck: ``cat(x, attention(x))`` where attention is ``attn_layers`` ×
    [LocalAttention2d → BN → ReLU] with ``attn_channels`` outputs. Decoder (deepest first): D3Block →
    ConvTranspose2d(3×3, stride 2, exact ×2) → BN → ReLU (→ Dropout2d on the first ``dropout_layers`` steps) →
    concat with the skip. Head: ConvTranspose2d(5×5, stride 2, exact ×2) → BN → ReLU → Conv2d(3×3, dilation 2) →
    sigmoid, one channel per (source, channel). Masks are independent sigmoids (they need not sum to 1).

    Bins at and above ``max_bins`` (above 16 kHz with the default 1487) are not modelled: each such bin gets the
    mask of bin ``max_bins − 1`` in the same frame, source and channel. Unlike a constant, this follows which
    source owns the top of the modelled band frame by frame (hi-hats, cymbals and sibilants carry most of the
    energy above 16 kHz and are present at 16 kHz too), it needs no parameters, and it stays in [0, 1].

    Training note: BatchNorm sees the zero padding, so chunks whose length is a multiple of ``2**levels`` frames
    (e.g. 512) train on real content only apart from the ``padded_bins − max_bins`` top bins.

    ``legacy=True`` is the original computation (module docstring), for the released weights; it needs
    ``rel_pos_bias=False``. Its inputs should have at least ``2**levels`` frames (the original crashes below).
    """

    domain = "spectral"

    max_bins: int
    nb_channels: int
    nb_sources: int
    padded_bins: int
    multiple: int
    legacy: bool

    def __init__(
        self,
        max_bins: int = 1487,
        nb_channels: int = 2,
        k: int = 12,
        levels: int = 6,
        d_model: int = 128,
        n_heads: int = 8,
        query_shape: int = 2,
        memory_flange: int = 3,
        attn_channels: int = 256,
        attn_layers: int = 2,
        dropout: float = 0.4,
        dropout_layers: int = 3,
        rel_pos_bias: bool = True,
        max_rel_bins: int = 32,
        legacy: bool = False,
    ):
        super().__init__()
        if legacy and rel_pos_bias:
            raise ConfigError(
                "UNetAttn: legacy (the original computation) has no position bias; set rel_pos_bias false"
            )
        if max_bins < 1 or nb_channels < 1 or k < 1 or levels < 1 or attn_channels < 1 or attn_layers < 0:
            raise ConfigError(
                "UNetAttn: max_bins, nb_channels, k, levels and attn_channels must be >= 1 and attn_layers >= 0, got "
                f"{max_bins}, {nb_channels}, {k}, {levels}, {attn_channels}, {attn_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"UNetAttn: dropout must be in [0, 1), got {dropout}")
        self.max_bins = max_bins
        self.nb_channels = nb_channels
        self.nb_sources = len(SOURCES)
        self.multiple = 2**levels
        self.legacy = legacy
        exact = 0 if legacy else 1  # output_padding: the original's up-sampling gives 2n − 1, not 2n
        self.padded_bins = (max_bins + self.multiple - 1) // self.multiple * self.multiple

        self.encoder = nn.ModuleList()
        widths: list[int] = []
        channels = nb_channels
        for i in range(levels):
            block = D3Block(channels, k, max(2, levels - 1 - i))
            self.encoder.append(block)
            channels = block.out_channels
            widths.append(channels)

        self.attention = nn.ModuleList()
        attn_in = channels
        for _ in range(attn_layers):
            self.attention.append(
                nn.Sequential(
                    LocalAttention2d(
                        attn_in,
                        attn_channels,
                        d_model,
                        n_heads,
                        query_shape,
                        memory_flange,
                        rel_pos_bias,
                        max_rel_bins,
                        mask_padding=not legacy,
                    ),
                    nn.BatchNorm2d(attn_channels),
                    nn.ReLU(inplace=True),
                )
            )
            attn_in = attn_channels
        channels += attn_channels if attn_layers > 0 else 0

        self.decoder = nn.ModuleList()
        for step, i in enumerate(range(levels - 2, -1, -1)):
            block = D3Block(channels, k, max(2, levels - 1 - i))
            layers: list[nn.Module] = [
                block,
                nn.ConvTranspose2d(
                    block.out_channels, widths[i], 3, stride=2, padding=1, output_padding=exact, bias=False
                ),
                nn.BatchNorm2d(widths[i]),
                nn.ReLU(inplace=True),
            ]
            if step < dropout_layers:
                layers.append(nn.Dropout2d(dropout))
            self.decoder.append(nn.Sequential(*layers))
            channels = 2 * widths[i]

        head = widths[0]
        self.head = nn.Sequential(
            nn.ConvTranspose2d(channels, head, 5, stride=2, padding=2, output_padding=exact, bias=False),
            nn.BatchNorm2d(head),
            nn.ReLU(inplace=True),
            nn.Conv2d(head, self.nb_sources * nb_channels, 3, padding=2, dilation=2),
        )
        # channels-last weights and activations (see forward); loading a state dict copies into this layout
        # Module.to takes memory_format (see its docstring), but its typed overloads leave it out
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _attend(self, x: Tensor) -> Tensor:
        """The bottleneck ``(batch, channels, bins, frames)`` with the attention layers' output concatenated."""
        if len(self.attention) == 0:
            return x
        a = x
        for layer in self.attention:
            a = layer(a)
        return torch.cat([x, a], 1)

    def forward(self, spec: Tensor) -> Tensor:
        batch, channels, bins, frames = spec.shape
        if channels != self.nb_channels:
            raise ValueError(f"UNetAttn: expected {self.nb_channels} channels, got {channels}")
        if self.legacy:
            return self._forward_legacy(spec)
        used = min(bins, self.max_bins)
        padded_frames = (frames + self.multiple - 1) // self.multiple * self.multiple
        x = F.pad(spec[:, :, :used], [0, padded_frames - frames, 0, self.padded_bins - used])
        # channels-last all the way (weights too): oneDNN's convolutions on CPU are about 1.2x faster in this
        # layout, the thin D3 layers and the full-resolution transposed conv most (benchmarks/bench_unet.py)
        x = x.contiguous(memory_format=torch.channels_last)

        skips: list[Tensor] = []
        for block in self.encoder:
            x = F.avg_pool2d(block(x), 2)
            skips.append(x)
        skips.pop()

        x = self._attend(x)

        for step in self.decoder:
            x = torch.cat([step(x), skips.pop()], 1)

        masks = torch.sigmoid(self.head(x))[:, :, :used, :frames]
        if bins > used:  # above max_bins: repeat the last modelled bin (see the class docstring)
            masks = torch.cat([masks, masks[:, :, used - 1 :].expand(-1, -1, bins - used, -1)], 2)
        return masks.reshape(batch, self.nb_sources, channels, bins, frames)

    def _forward_legacy(self, spec: Tensor) -> Tensor:
        """The original's computation (see the module docstring), same shapes as :meth:`forward`."""
        batch, channels, bins, frames = spec.shape
        x = spec[:, :, : self.max_bins].contiguous(memory_format=torch.channels_last)
        skips: list[Tensor] = []
        for block in self.encoder:
            x = F.avg_pool2d(block(x), 2)  # floors odd sizes
            skips.append(x)
        skips.pop()
        x = self._attend(x)
        for step in self.decoder:
            x = self._up_and_join(step(x), skips.pop())  # 2n − 1 per axis: zero-padded up to the skip's size
        masks = torch.sigmoid(self.head(x))
        masks = F.pad(masks, [0, frames - masks.shape[3], 0, bins - masks.shape[2]], value=0.25)
        return masks.reshape(batch, self.nb_sources, channels, bins, frames)

    # ------------------------------------------------------------------------------------------- tiled inference
    # Not part of the scripted model: nothing that forward calls reaches these methods.

    def time_radius(self) -> int:
        """How many input frames either side of an output frame can change its mask: an upper bound from the
        architecture (each 3×3 convolution of dilation ``d`` at a level of ``r`` input frames per frame adds
        ``d·r``, a pooling or ×2 up-sampling one frame of the finer level, an attention layer its query block and
        flanks). 2.7 k frames for the released U-Net: more than the original's 2584-frame chunks, so no output
        frame of a chunk can be computed exactly from less than the whole chunk."""
        radius, scale = 0, 1
        for block in self.encoder:
            radius += scale * _d3_radius(block) + scale  # then the 2×2 pooling
            scale *= 2
        for layer in self.attention:
            assert isinstance(layer, nn.Sequential)
            attn = layer[0]
            assert isinstance(attn, LocalAttention2d)
            # the 3×3 qkv convolution, the query block and its flanks, the 3×3 output convolution
            radius += scale * (2 + attn.query_shape - 1 + attn.memory_flange)
        for step in self.decoder:
            assert isinstance(step, nn.Sequential)
            radius += scale * _d3_radius(step[0]) + scale  # then the ×2 transposed convolution (3 taps)
            scale //= 2
        return radius + scale + 2  # the head: ×2 transposed convolution (5 taps), then a 3×3 convolution of dilation 2

    def forward_tiled(self, spec: Tensor, tile: int = 256) -> Tensor:
        """:meth:`forward`'s masks for ``spec (batch, channels, bins, frames)`` (to float rounding), with the
        high-resolution stages computed in time tiles: ``(batch, 4, channels, bins, frames)``.

        Cutting the whole network into sub-chunks with exact margins gains nothing: :meth:`time_radius` is
        longer than the original's 2584-frame chunks. Its high-resolution stages are local, though: a D3 block
        reads ``Σ(2**L − 1)`` frames either side, a pooling or ×2 transposed convolution a frame or two. So the
        encoder levels at full, ½ and ¼ resolution (tiles of ``tile`` frames of their level, starting on even
        frames), the last decoder level's D3 block (``tile / 2`` frames, on the join of the step before with its
        skip, which is never formed whole) and its up-sampling with the head (``tile`` output frames) run on
        tiles with those margins, cut only at the input's own edges (where the zero paddings and the legacy
        flooring are the whole input's) or inside the margins; the low-resolution middle (the attention, whose
        reach is the whole input) runs as in :meth:`forward`. What stays whole are the tensors between the stages
        (the skips at ½ and ¼ resolution, the last D3 block's output), not the full-resolution activations: a
        2584-frame chunk of the released U-Net peaks at ~3.5 GB instead of ~10 GB (benchmarks/bench_memory.py),
        at about the same speed.
        """
        batch, channels, bins, frames = spec.shape
        if channels != self.nb_channels:
            raise ValueError(f"UNetAttn: expected {self.nb_channels} channels, got {channels}")
        if tile < 1:
            raise ValueError(f"UNetAttn.forward_tiled: tile must be >= 1 frame, got {tile}")
        if len(self.decoder) < 2:  # two levels or fewer: nothing worth tiling
            return self.forward(spec)
        used = min(bins, self.max_bins)
        if self.legacy:
            x = spec[:, :, :used]
        else:
            padded_frames = (frames + self.multiple - 1) // self.multiple * self.multiple
            x = F.pad(spec[:, :, :used], [0, padded_frames - frames, 0, self.padded_bins - used])
        x = x.contiguous(memory_format=torch.channels_last)

        skips: list[Tensor] = []
        for i, block in enumerate(self.encoder):
            # levels at full, ½ and ¼ resolution (their D3 blocks read 62, 30 and 14 frames either side)
            x = _pooled_in_tiles(block, x, tile) if i < 3 else F.avg_pool2d(block(x), 2)
            skips.append(x)
        skips.pop()
        x = self._attend(x)
        for step in self.decoder[:-2]:
            x = self._up_and_join(step(x), skips.pop())
        up, last = self.decoder[-2:]
        assert isinstance(last, nn.Sequential)
        # the last D3 block at ¼ resolution, on tiles of the join of the step before with its skip (the whole join
        # is never formed)
        # (tiles of half the size: at 556 channels the block's activations per frame are the largest of all)
        x = _in_tiles(last[0], self._padded_up(up(x), skips[-1]), skips.pop(), max(1, tile // 2))
        masks = torch.sigmoid(self._head_in_tiles(last[1:], x, skips.pop(), tile))
        if self.legacy:
            masks = F.pad(masks, [0, frames - masks.shape[3], 0, bins - masks.shape[2]], value=0.25)
        else:
            masks = masks[:, :, :used, :frames]
            if bins > used:
                masks = torch.cat([masks, masks[:, :, used - 1 :].expand(-1, -1, bins - used, -1)], 2)
        return masks.reshape(batch, self.nb_sources, channels, bins, frames)

    def _up_and_join(self, y: Tensor, skip: Tensor) -> Tensor:
        """A decoder step's up-sampled output joined to its skip, as :meth:`forward`."""
        return torch.cat([self._padded_up(y, skip), skip], 1)

    def _padded_up(self, y: Tensor, skip: Tensor) -> Tensor:
        """A decoder step's up-sampled output, ready to join its skip (legacy: the original's zero padding of the
        ``2n − 1`` frames and bins up to the skip's)."""
        if self.legacy:
            y = F.pad(y, [0, skip.shape[3] - y.shape[3], 0, skip.shape[2] - y.shape[2]])
        return y

    def _head_in_tiles(self, up: nn.Module, x: Tensor, skip: Tensor, tile: int) -> Tensor:
        """``head(join(up(x), skip))`` before the sigmoid, in tiles: ``x`` at ¼ resolution, ``skip`` at ½, the
        result at full resolution (legacy: ``2·frames(skip) − 1`` frames).

        Output frame ``t`` reads joined frames ``⌈t/2⌉ − 2 … ⌊t/2⌋ + 2``, and joined frame ``u`` reads ``x``'s
        ``⌈(u − 1)/2⌉ … ⌊(u + 1)/2⌋``: three frames of ``x`` either side are enough."""
        frames, half = x.shape[-1], skip.shape[-1]
        out_frames = 2 * half - 1 if self.legacy else 2 * half
        step = max(1, tile // 2)  # joined frames per tile
        pieces = []
        for u0 in range(0, half, step):
            u1 = min(u0 + step, half)
            v0, v1 = max(0, u0 // 2 - 3), min(frames, u1 // 2 + 3)
            s, e = 2 * v0, (half if v1 == frames else 2 * v1)  # the joined frames the tile computes
            y = up(x[..., v0:v1].contiguous(memory_format=torch.channels_last))
            if self.legacy or y.shape[3] != e - s:  # legacy: 2n − 1 frames, zero-padded as in forward
                y = F.pad(y, [0, e - s - y.shape[3], 0, skip.shape[2] - y.shape[2]])
            out = self.head(torch.cat([y, skip[..., s:e]], 1))  # starts at output frame 2s
            a, b = 2 * u0, (2 * u1 if u1 < half else out_frames)
            pieces.append(out[..., a - 2 * s : b - 2 * s])
        return torch.cat(pieces, -1)


def _d3_radius(block: nn.Module) -> int:
    """Frames either side that a :class:`D3Block`'s output reads at its level: ``2**L − 1`` per D2 block (its
    layers' 3×3 convolutions of dilations 1 … 2**(L − 1) in a chain)."""
    assert isinstance(block, D3Block)
    radius = 0
    for d2 in block.blocks:
        assert isinstance(d2, D2Block)
        radius += 2**d2.L - 1
    return radius


def _in_tiles(block: nn.Module, first: Tensor, second: Tensor, tile: int) -> Tensor:
    """``block(cat([first, second], 1))`` for a :class:`D3Block` (same number of frames), computed on tiles of
    ``tile`` frames with margins of its reach."""
    frames, margin = first.shape[-1], _d3_radius(block)
    out: Tensor | None = None
    for p in range(0, frames, tile):
        q = min(p + tile, frames)
        s, e = max(0, p - margin), min(frames, q + margin)
        x = torch.cat([first[..., s:e], second[..., s:e]], 1).contiguous(memory_format=torch.channels_last)
        y = block(x)
        del x
        out = _into(out, y[..., p - s : q - s], p, frames)
    assert out is not None
    return out


def _into(out: Tensor | None, piece: Tensor, start: int, frames: int) -> Tensor:
    """Write ``piece`` at frame ``start`` of ``out`` (allocated at the first piece, ``frames`` long, channels-last):
    no concatenation that would hold the pieces and their result at once."""
    if out is None:
        shape = (piece.shape[0], piece.shape[1], piece.shape[2], frames)
        out = piece.new_empty(shape).contiguous(memory_format=torch.channels_last)
    out[..., start : start + piece.shape[-1]] = piece
    return out


def _pooled_in_tiles(block: nn.Module, x: Tensor, tile: int) -> Tensor:
    """``avg_pool2d(block(x), 2)`` for a :class:`D3Block`, on tiles of about ``tile`` input frames with margins of
    its reach; tiles start on even frames, so each pools the pairs the whole input pools (legacy: an odd last
    frame is dropped in both)."""
    frames = x.shape[-1]
    margin = _d3_radius(block) + 1  # the pair's second frame
    margin += margin % 2
    step = max(1, tile // 2)  # pooled frames per tile
    if frames <= tile or frames < 2:
        return F.avg_pool2d(block(x), 2)
    out: Tensor | None = None
    for p in range(0, frames // 2, step):
        q = min(p + step, frames // 2)
        s, e = max(0, 2 * p - margin), min(frames, 2 * q + margin)
        y = F.avg_pool2d(block(x[..., s:e].contiguous(memory_format=torch.channels_last)), 2)
        out = _into(out, y[..., p - s // 2 : q - s // 2], p, frames // 2)
    assert out is not None
    return out
