"""D2 and D3 blocks: densely connected multi-dilated convolutions (D3Net, Takahashi & Mitsufuji 2021).

In a D2 block of ``L`` layers, feature ``j`` (the block input is feature 0, layer ``i``'s output is feature
``i + 1``) reaches every later layer through its own 3×3 convolution with dilation ``2**j``. Instead of
concatenating all earlier features in front of every layer, each feature is convolved **once** into the
contributions for all later layers, and those contributions are accumulated as the block runs. By linearity
of convolution this equals the dense form, but only one accumulator of ``k·(L − i − 1)`` channels is alive
after layer ``i``, so no growing concatenation is ever materialised.
"""

import torch
from torch import Tensor, nn


class _D2Layer(nn.Module):
    """One D2 layer: conv → (+ accumulated contributions of earlier features) → BN → ReLU.

    ``forward(h, acc)``: ``h`` (batch, in, bins, frames) is the latest feature, ``acc`` (batch, k·n, bins, frames)
    the contributions the earlier features sent to this and the ``n − 1`` later layers (``None`` for the first
    layer). Returns this layer's output (batch, k, bins, frames) and the accumulator for the remaining layers,
    (batch, k·(n − 1), bins, frames).
    """

    k: int
    copy_output: bool

    def __init__(self, in_channels: int, k: int, remaining: int, dilation: int):
        super().__init__()
        self.k = k
        # set by fuse.fold_batchnorm, which replaces the norm by an identity: the output is then a view of the
        # conv's k·remaining channels and would keep all of them alive until the block's concatenation
        self.copy_output = False
        # one conv makes this feature's contribution to this layer and to every later one
        self.conv = nn.Conv2d(in_channels, k * remaining, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm: nn.Module = nn.BatchNorm2d(k)  # an identity once folded (fuse.fold_batchnorm)
        self.act = nn.ReLU(inplace=True)

    def forward(self, h: Tensor, acc: Tensor | None) -> tuple[Tensor, Tensor]:
        y = self.conv(h)
        if acc is not None:
            y += acc  # in place is safe: the conv's backward does not need its output
        # split (not two slices) so the backward concatenates the two gradients instead of zero-filling twice
        own, rest = y.split([self.k, y.shape[1] - self.k], 1)
        layout = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        if not self.copy_output:
            # a batch norm on a channel slice of a channels-last tensor takes PyTorch's strided path: BN + ReLU
            # forward and backward for 12 of 60 channels at 1536 x 320 took 370 ms, 64 ms on a contiguous copy
            # (1 thread); a no-op without a batch norm after it (the last layer) or in NCHW at batch 1
            own = own.contiguous(memory_format=layout)
        out = self.act(self.norm(own))
        if self.copy_output:
            out = out.clone(memory_format=layout)
        return out, rest


class D2Block(nn.Module):
    """Multi-dilated densely connected block: ``L`` layers of growth ``k``, layer ``i`` dilated by ``2**i``.

    Post-activation (conv → sum → BN → ReLU); the block input is not normalised and not part of the output.

    ``forward``: (batch, in_channels, bins, frames) → (batch, k·L, bins, frames), the concatenation of all
    layer outputs (same spatial size: every conv is "same"-padded).
    """

    def __init__(self, in_channels: int, k: int, L: int):
        super().__init__()
        if in_channels < 1 or k < 1 or L < 1:
            raise ValueError(f"D2Block needs in_channels, k, L >= 1, got {in_channels}, {k}, {L}")
        self.in_channels = in_channels
        self.k = k
        self.L = L
        self.layers = nn.ModuleList(_D2Layer(in_channels if i == 0 else k, k, L - i, 2**i) for i in range(L))

    @property
    def out_channels(self) -> int:
        return self.k * self.L

    def forward(self, x: Tensor) -> Tensor:
        outputs: list[Tensor] = []
        h = x
        acc: Tensor | None = None
        for layer in self.layers:
            h, acc = layer(h, acc)
            outputs.append(h)
        return torch.cat(outputs, 1)


class D3Block(nn.Module):
    """``M`` D2 blocks, each fed the concatenation of the block input and all earlier D2 outputs.

    ``forward``: (batch, in_channels, bins, frames) → (batch, in_channels + M·k·L, bins, frames) =
    ``cat(input, d2_1, …, d2_M)``.
    """

    def __init__(self, in_channels: int, k: int, L: int, M: int = 2):
        super().__init__()
        if M < 1:
            raise ValueError(f"D3Block needs M >= 1, got {M}")
        self.in_channels = in_channels
        self.blocks = nn.ModuleList(D2Block(in_channels + m * k * L, k, L) for m in range(M))
        self.out_channels = in_channels + M * k * L

    def forward(self, x: Tensor) -> Tensor:
        features: list[Tensor] = [x]
        for block in self.blocks:
            features.append(block(torch.cat(features, 1) if len(features) > 1 else x))
        return torch.cat(features, 1)
