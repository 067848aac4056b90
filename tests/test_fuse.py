"""Batch-norm folding for inference: same outputs, no batch norm left, the original untouched."""

import pytest
import torch
from torch import nn

from danna_sep.models import build_model
from danna_sep.models.fuse import fold_batchnorm

TINY_UNET = {
    "type": "UNetAttn",
    "args": {
        "max_bins": 200,
        "k": 4,
        "levels": 3,
        "d_model": 16,
        "n_heads": 2,
        "attn_channels": 8,
        "attn_layers": 2,
        "dropout_layers": 1,
    },
}


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics and affine parameters (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())


@pytest.mark.parametrize("frames", [7, 64])
def test_unet_folded_equals_original(frames):
    torch.manual_seed(0)
    model = build_model(TINY_UNET)
    _randomise_norms(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert folded is not model and _norms(folded) == 0 and _norms(model) > 0
    x = torch.rand(2, 2, 257, frames) * 3
    with torch.inference_mode():
        ref, out = model(x), folded(x)
    assert ref.shape == out.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the original keeps its weights (and its layout)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the folded model scripts (export path) and gives the same result
    scripted = torch.jit.script(folded)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), ref, rtol=1e-5, atol=1e-5)


def test_grouped_transposed_conv_and_conv_sequences():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.BatchNorm2d(5),
    )
    _randomise_norms(model, seed=3)
    model.eval()
    folded = fold_batchnorm(model)
    assert _norms(folded) == 0
    x = torch.randn(3, 4, 9, 11)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_models_without_batch_norm_are_returned_as_is():
    model = build_model({"type": "DemucsSplit", "args": {"channels": 8, "depth": 2, "lstm_layers": 1}})
    assert fold_batchnorm(model) is model


def test_a_batch_norm_without_a_convolution_before_it_is_kept():
    model = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)).eval()
    _randomise_norms(model)
    folded = fold_batchnorm(model)
    assert _norms(folded) == 1
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_folded_d2_outputs_do_not_hold_the_whole_conv_output(layout):
    """Without its norm, a D2 layer's output would be a view of the conv's k·remaining channels, keeping every
    layer's full conv output alive until the block's concatenation (the U-Net's inference peak: 1092 → 768 MB
    live at 512 frames). The folded layer copies its k channels, in the input's layout."""
    from danna_sep.models.d3net import D2Block

    torch.manual_seed(2)
    block = D2Block(3, k=4, L=3)
    _randomise_norms(block)
    block.eval()
    folded = fold_batchnorm(block)
    x = torch.rand(1, 3, 16, 8).contiguous(memory_format=layout)
    with torch.inference_mode():
        h, acc = folded.layers[0](x, None)
        ref = block(x)
        out = folded(x)
    assert h.shape == (1, 4, 16, 8) and acc.shape == (1, 8, 16, 8)
    assert h.untyped_storage().nbytes() == h.numel() * h.element_size()  # its own k channels, nothing more
    assert h.is_contiguous(memory_format=layout)
    # the last layer's conv output is its own k channels already: nothing to copy
    assert [layer.copy_output for layer in folded.layers] == [True, True, False]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # training keeps the batch norm, whose output is already a fresh tensor: no copy there
    assert not any(layer.copy_output for layer in block.layers)


def test_xumx_folded_equals_original_and_scripts():
    """X-UMX's input normalisation, batch norms and output affine fold into its three linear layers: same masks
    (float rounding), no batch norm left, the original untouched, and the folded model scripts and exports."""
    torch.manual_seed(3)
    model = build_model(
        {"type": "X_UMX", "args": {"n_fft": 512, "hidden_channels": 32, "max_bins": 100, "nb_layers": 2}}
    )
    _randomise_norms(model, seed=4)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # non-trivial normalisation: −mean around 1, 1/std around 1
        model.input_mean.copy_(-2 * torch.rand(model.input_mean.shape, generator=g))
        model.input_scale.copy_(torch.rand(model.input_scale.shape, generator=g) + 0.5)
        model.output_scale.copy_(torch.rand(model.output_scale.shape, generator=g) + 0.5)
        model.output_mean.copy_(torch.randn(model.output_mean.shape, generator=g))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert _norms(folded) == 0 and _norms(model) == 3
    assert folded.encoder_bias is not None and model.encoder_bias is None
    x = torch.rand(2, 2, 257, 9, generator=g) * 3
    with torch.inference_mode():
        ref, out = model(x), folded(x)
        scripted = torch.jit.script(folded)(x)
    assert (ref > 0).any() and (ref == 0).any()  # both sides of the final ReLU are exercised
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scripted, ref, rtol=1e-5, atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # a trained model's state dict has no folded biases: checkpoints keep their keys
    assert not {"encoder_bias", "decoder1_bias", "decoder2_bias"} & set(before)
