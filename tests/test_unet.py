"""UNetAttn (D3 U-Net + 2-D local attention) and its D2/D3 blocks."""

import copy

import pytest
import torch
import torch.nn.functional as F

from danna_sep.errors import ConfigError
from danna_sep.models import build_model
from danna_sep.models.d3net import D2Block, D3Block
from danna_sep.models.unet import LocalAttention2d, UNetAttn, local_attention

REFERENCE_PARAMS = 15_676_652  # the original UNetAttn (k=12, max_bins 1487)

# small widths and few bins keep every forward pass in the milliseconds; 6 levels as in the real model
TINY = dict(max_bins=60, k=2, d_model=8, n_heads=2, attn_channels=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The inputs here are tiny: one thread avoids OpenMP barrier waits when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> UNetAttn:
    torch.manual_seed(0)
    return UNetAttn(**TINY).eval()


# ---------------------------------------------------------------------------------------------- D2 / D3 blocks


def dense_d2(block: D2Block, x: torch.Tensor) -> torch.Tensor:
    """D2 block in the textbook dense form: layer i sees every earlier feature j through its own conv with
    dilation 2**j (the k-channel slice of feature j's conv that belongs to layer i)."""
    k, features, outputs = block.k, [x], []
    for i, layer in enumerate(block.layers):
        pre = 0
        for j in range(i + 1):
            conv = block.layers[j].conv
            weight = conv.weight[(i - j) * k : (i - j + 1) * k]
            pre = pre + F.conv2d(features[j], weight, padding=conv.padding, dilation=conv.dilation)
        out = layer.act(layer.norm(pre))
        features.append(out)
        outputs.append(out)
    return torch.cat(outputs, 1)


def test_d2_block_equals_dense_multi_dilated_form():
    torch.manual_seed(0)
    block = D2Block(3, k=4, L=4).eval()
    for layer in block.layers:  # non-trivial BN so a wrong pairing of pre-activations would show
        layer.norm.running_mean.uniform_(-0.5, 0.5)
        layer.norm.running_var.uniform_(0.5, 2.0)
    assert [layer.conv.dilation for layer in block.layers] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert [layer.conv.out_channels for layer in block.layers] == [16, 12, 8, 4]
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (2, block.out_channels, 20, 24) == (2, 16, 20, 24)
        torch.testing.assert_close(y, dense_d2(block, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_d2_block_training_is_the_same_in_channels_last(batch):
    """In training the channels-last layers copy their k channels before the batch norm (a norm on a channel slice
    of a channels-last tensor takes PyTorch's slow strided path): same outputs, batch statistics and gradients
    as the textbook dense form in NCHW."""
    torch.manual_seed(1)
    block = D2Block(3, k=4, L=3).train()
    reference = copy.deepcopy(block)
    block.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 12, 10)
    x_last = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    x = x.requires_grad_()
    y, want = block(x_last), dense_d2(reference, x)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    g = torch.randn(want.shape)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(x_last.grad, x.grad, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(block.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    for ours, theirs in zip(block.layers, reference.layers, strict=True):
        torch.testing.assert_close(ours.norm.running_var, theirs.norm.running_var)


def test_d3_block_concatenates_input_and_both_d2_outputs():
    torch.manual_seed(0)
    block = D3Block(5, k=3, L=2).eval()
    x = torch.randn(1, 5, 8, 8)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (1, 5 + 2 * 3 * 2, 8, 8) and block.out_channels == 17
        torch.testing.assert_close(y[:, :5], x)
        torch.testing.assert_close(y[:, 5:11], block.blocks[0](x))
        torch.testing.assert_close(y[:, 11:], block.blocks[1](y[:, :11]))


# ----------------------------------------------------------------------------------------------- local attention


def window_frames(block: int, query_shape: int = 2, flange: int = 3) -> range:
    return range(block * query_shape - flange, block * query_shape + query_shape + flange)


def test_attention_is_local_in_time():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 4, 3, 20)
    t = 9
    k2, v2 = k.clone(), v.clone()
    k2[..., t] += 1.0
    v2[..., t] -= 2.0
    out, _ = local_attention(q, k, v, 2, 3, 20)
    out2, _ = local_attention(q, k2, v2, 2, 3, 20)
    changed = (out - out2).abs().amax(dim=(0, 1, 2, 3)) > 1e-6  # per query frame
    expected = torch.tensor([t in window_frames(f // 2) for f in range(20)])
    assert expected.sum() == 8  # blocks 3..6, frames 6..13
    assert torch.equal(changed, expected)


def test_attention_module_is_local_in_time():
    """Through the 3×3 qkv and output convs a change at frame t reaches one more frame on each side."""
    torch.manual_seed(0)
    attn = LocalAttention2d(4, 5, d_model=8, n_heads=2, query_shape=2, memory_flange=3).eval()
    x = torch.randn(1, 4, 6, 24)
    x2 = x.clone()
    t = 11
    x2[..., t] += 1.0
    with torch.no_grad():
        changed = (attn(x) - attn(x2)).abs().amax(dim=(0, 1, 2)) > 1e-6
    reached = {f for f in range(24) if any(s in window_frames(f // 2) for s in (t - 1, t, t + 1))}
    expected = torch.tensor([any(g in reached for g in (f - 1, f, f + 1)) for f in range(24)])
    assert not expected.all()
    assert torch.equal(changed, expected)


def test_padded_keys_get_zero_weight():
    torch.manual_seed(0)
    frames, flange, qs = 5, 3, 2  # padded to 6 frames, plus the 3-frame flanks
    q, k, v = torch.randn(3, 2, 2, 4, 3, frames)
    out, weights = local_attention(q, k, v, qs, flange, frames)
    bins, window = 3, qs + 2 * flange
    assert weights.shape == (2, 2, 3, bins * qs, bins * window)
    w = weights.reshape(2, 2, 3, bins * qs, bins, window)
    for b in range(3):
        for j, f in enumerate(window_frames(b, qs, flange)):
            if 0 <= f < frames:
                assert (w[:, :, b, :, :, j] > 0).all()
            else:
                assert (w[:, :, b, :, :, j] == 0).all(), f"frame {f} of block {b}"
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3, bins * qs))

    # frames at or after `length` are masked too: junk there leaves earlier outputs unchanged
    junk = torch.randn(3, 2, 2, 4, 3, 4) * 100
    long_out, _ = local_attention(
        torch.cat([q, junk[0]], -1), torch.cat([k, junk[1]], -1), torch.cat([v, junk[2]], -1), qs, flange, frames
    )
    torch.testing.assert_close(long_out[..., :frames], out)


def test_query_whose_window_is_all_padding_gives_zero_not_nan():
    torch.manual_seed(0)
    qkv = torch.randn(3, 1, 2, 4, 3, 12, requires_grad=True)
    q, k, v = qkv
    out, weights = local_attention(q, k, v, 2, 3, 2)  # only frames 0, 1 are valid
    # blocks 3..5 (frames 6..11) see frames ≥ 3 only
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert (weights[:, :, 3:] == 0).all() and (out[..., 6:] == 0).all()
    assert (out[..., :6].abs() > 0).all()
    out.square().sum().backward()
    assert torch.isfinite(qkv.grad).all() and qkv.grad.abs().sum() > 0


def test_relative_position_bias_depends_only_on_offsets():
    torch.manual_seed(0)
    qs, flange, bins, R = 2, 3, 5, 2
    attn = LocalAttention2d(4, 4, 8, 2, qs, flange, rel_pos_bias=True, max_rel_bins=R)
    assert attn.time_bias.shape == (2, 2 * (qs + flange) - 1) and attn.freq_bias.shape == (2, 2 * R + 1)
    assert not attn.time_bias.any() and not attn.freq_bias.any()  # starts as the plain model
    with torch.no_grad():
        attn.time_bias.normal_()
        attn.freq_bias.normal_()
    window = qs + 2 * flange
    bias = attn.position_bias(bins, torch.device("cpu")).reshape(2, bins, qs, bins, window)
    for fq in range(bins):
        for i in range(qs):
            for fk in range(bins):
                for j in range(window):
                    dt, df = (j - flange) - i, max(-R, min(R, fk - fq))
                    expected = attn.time_bias[:, dt + qs + flange - 1] + attn.freq_bias[:, df + R]
                    torch.testing.assert_close(bias[:, fq, i, fk, j], expected)

    plain = LocalAttention2d(4, 4, 8, 2, qs, flange, rel_pos_bias=False)
    assert plain.time_bias is None and plain.position_bias(bins, torch.device("cpu")) is None
    plain.load_state_dict({k: v for k, v in attn.state_dict().items() if k not in ("time_bias", "freq_bias")})
    x = torch.randn(1, 4, bins, 9)
    with torch.no_grad():
        assert not torch.allclose(attn(x), plain(x))


# ---------------------------------------------------------------------------------------------------- UNetAttn


@pytest.mark.parametrize("frames", [1, 7, 63, 64, 513])
def test_shapes_and_mask_range_for_any_length(tiny, frames):
    x = torch.rand(2, 2, 80, frames) * 5
    with torch.no_grad():
        masks = tiny(x)
    assert masks.shape == (2, 4, 2, 80, frames)
    assert torch.isfinite(masks).all()
    assert masks.min() >= 0 and masks.max() <= 1


def test_every_bin_and_frame_is_predicted(tiny):
    """The last modelled bin and the last frame depend on the input; bins ≥ max_bins copy bin max_bins − 1."""
    torch.manual_seed(1)
    x = torch.rand(1, 2, 80, 63)
    y = torch.rand(1, 2, 80, 63)
    with torch.no_grad():
        a, b = tiny(x), tiny(y)
        above = tiny(torch.cat([x[:, :, :60], y[:, :, 60:]], 2))
    last_bin, last_frame = TINY["max_bins"] - 1, 62
    assert (a[..., last_bin, :] - b[..., last_bin, :]).abs().amin() > 0
    assert (a[..., last_frame] - b[..., last_frame]).abs().amin() > 0
    assert torch.equal(a[..., 60:, :], a[..., last_bin : last_bin + 1, :].expand_as(a[..., 60:, :]))
    torch.testing.assert_close(above, a)  # bins above max_bins are not looked at
    # inputs with fewer bins than max_bins work too
    with torch.no_grad():
        assert tiny(x[:, :, :30]).shape == (1, 4, 2, 30, 63)


def test_full_size_model_shape():
    torch.manual_seed(0)
    model = UNetAttn().eval()
    assert UNetAttn.domain == "spectral" and model.padded_bins == 1536
    x = torch.rand(1, 2, 2049, 3)
    with torch.no_grad():
        masks = model(x)
    assert masks.shape == (1, 4, 2, 2049, 3)
    assert masks.min() >= 0 and masks.max() <= 1
    assert torch.equal(masks[..., 1487:, :], masks[..., 1486:1487, :].expand(-1, -1, -1, 562, -1))


def test_parameter_count_matches_reference():
    with torch.device("meta"):
        plain = UNetAttn(rel_pos_bias=False)
        default = UNetAttn()
    assert sum(p.numel() for p in plain.parameters()) == REFERENCE_PARAMS
    n = sum(p.numel() for p in default.parameters())
    # the relative position bias adds 2 layers × 8 heads × (9 time + 65 freq offsets)
    assert n == REFERENCE_PARAMS + 2 * 8 * (9 + 65)
    assert abs(n / REFERENCE_PARAMS - 1) < 0.05
    assert sum(p.numel() for p in plain.attention.parameters()) == 2_976_256
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in plain.modules()) == 3


def test_torchscript_matches_eager(tiny):
    scripted = torch.jit.script(tiny)
    for frames in (5, 70):
        x = torch.rand(1, 2, 80, frames)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), tiny(x))


def test_onnx_export_with_dynamic_frames(tiny, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "unet.onnx"
    torch.onnx.export(
        tiny,
        (torch.rand(1, 2, 80, 70),),
        str(path),
        input_names=["mag"],
        output_names=["masks"],
        dynamic_axes={"mag": {0: "batch", 3: "frames"}, "masks": {0: "batch", 4: "frames"}},
        opset_version=17,
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(path))
    for frames in (1, 70, 130):  # 130 pads to 192 frames: catches truncating ONNX integer division
        x = torch.rand(2, 2, 80, frames)
        out = torch.from_numpy(session.run(None, {"mag": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(out, tiny(x), rtol=1e-4, atol=1e-5)


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    model = UNetAttn(max_bins=16, k=2, levels=3, d_model=8, n_heads=2, attn_channels=8, dropout=0.0)
    x = torch.rand(2, 2, 16, 16)
    target = torch.rand(2, 4, 2, 16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_registry_and_bad_arguments():
    model = build_model({"type": "unet", "args": TINY})
    assert isinstance(model, UNetAttn) and model.domain == "spectral"
    with pytest.raises(ConfigError, match="divisible"):
        UNetAttn(d_model=10, n_heads=4)
    with pytest.raises(ConfigError, match="dropout"):
        UNetAttn(**{**TINY, "dropout": 1.5})
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 1, 80, 4))


# ------------------------------------------------------------------------------------------ legacy computation


def test_unmasked_attention_gives_padded_keys_their_softmax_share():
    # the original's attention: padded keys are zeros (logit 0) and take part in the softmax, with value zero
    torch.manual_seed(1)
    frames, flange, qs = 5, 3, 2
    q, k, v = torch.randn(3, 1, 2, 4, 3, frames)
    out, weights = local_attention(q, k, v, qs, flange, frames, mask=False)
    bins, window = 3, qs + 2 * flange
    w = weights.reshape(1, 2, 3, bins * qs, bins, window)
    assert (w > 0).all()  # no key is masked
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 3, bins * qs))
    # brute force for block 1 (frames 2, 3; keys frames -1 … 6 with zeros outside 0 … 4)
    kp = F.pad(k, [flange, flange + 1])
    vp = F.pad(v, [flange, flange + 1])
    keys = kp[..., 2 : 2 + window].permute(0, 1, 3, 4, 2).reshape(1, 2, bins * window, 4)
    values = vp[..., 2 : 2 + window].permute(0, 1, 3, 4, 2).reshape(1, 2, bins * window, 4)
    queries = q[..., 2:4].permute(0, 1, 3, 4, 2).reshape(1, 2, bins * qs, 4)
    want = ((queries @ keys.transpose(-1, -2)).softmax(-1) @ values).reshape(1, 2, bins, qs, 4).permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(out[..., 2:4], want)


def test_legacy_geometry_is_the_originals():
    # 2·⌊max_bins/2⌋ − 1 bins and 2·⌊frames/2⌋ − 1 frames predicted, the rest of the mask exactly 0.25
    torch.manual_seed(0)
    args = dict(TINY, max_bins=101)  # odd sizes floor in the poolings; 6 of them need ≥ 64 bins and frames
    model = UNetAttn(**args, legacy=True, rel_pos_bias=False).eval()
    for frames in (64, 100, 129):
        with torch.no_grad():
            masks = model(torch.rand(1, 2, 2049, frames))
        assert masks.shape == (1, 4, 2, 2049, frames)
        bins_out, frames_out = 2 * (args["max_bins"] // 2) - 1, 2 * (frames // 2) - 1
        assert (masks[..., bins_out:, :] == 0.25).all() and (masks[..., frames_out:] == 0.25).all()
        inside = masks[..., :bins_out, :frames_out]
        assert (inside != 0.25).float().mean() > 0.99 and inside.min() > 0 and inside.max() < 1
    # the same weights, fixed geometry: same parameters, different computation
    fixed = UNetAttn(**args, rel_pos_bias=False).eval()
    fixed.load_state_dict(model.state_dict())
    with torch.no_grad():
        x = torch.rand(1, 2, 2049, 64)
        assert (fixed(x) - model(x)).abs().max() > 1e-3
    scripted = torch.jit.script(model)
    x = torch.rand(1, 2, 2049, 70)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    with pytest.raises(ConfigError, match="rel_pos_bias"):
        UNetAttn(**TINY, legacy=True)
