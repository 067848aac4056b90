import io
import itertools

import julius
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from danna_sep.errors import ConfigError
from danna_sep.models import build_model
from danna_sep.models.demucs import (
    BLSTM,
    BlockResample,
    DecoderLevel,
    DemucsSplit,
    PhaseConvTranspose1d,
    _matrix_for_rows,
    destandardize,
    rescale_conv_,
    standardize,
)

# the project's contract is TorchScript; recent torch flags torch.jit.script/save/load as deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _single_thread():
    # the CI box has 2 cores shared with other test files
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**kwargs) -> DemucsSplit:
    torch.manual_seed(0)
    args = dict(channels=4, depth=4, lstm_layers=1)
    args.update(kwargs)
    return DemucsSplit(**args)


def test_reference_parameter_count_and_split():
    with torch.device("meta"):  # no 732 MiB allocation
        model = DemucsSplit()

    def count(params):
        return sum(p.numel() for p in params)

    assert count(model.parameters()) == 191_928_152
    # §8's split: encoder 18.9M, convs_1x1 37.7M, dec_pre_convs 18.9M, decoders 12.6M, LSTM 94.4M, linear 9.4M
    assert count(model.encoder.parameters()) == 18_870_384
    assert count(p for d in model.decoder for p in d.skip_conv.parameters()) == 37_739_520
    assert count(p for d in model.decoder for p in d.pre_conv.parameters()) == 18_881_856
    assert count(p for d in model.decoder for p in d.deconv.parameters()) == 12_575_144
    assert count(model.lstm.lstm.parameters()) == 94_420_992
    assert count(model.lstm.linear.parameters()) == 9_440_256
    assert model.lstm.linear.out_features == 3072
    # per-source widths after the GLU, deepest first
    assert [d.width for d in model.decoder] == [768, 384, 192, 96, 48, 24]
    assert model.decoder[-1].deconv.out_channels == 8
    assert DemucsSplit.domain == "waveform"


def test_valid_length_is_minimal_and_exact():
    model = tiny(channels=2, depth=6)  # valid_length depends only on depth, kernel, stride and resampling
    assert model.valid_length(1) == 4778  # one frame at the bottom: the shortest internal input
    assert model.valid_length(441000) == 441002  # the original lost 2046 samples of 10 s
    for length in [1, 2, 4777, 4778, 4779, 10007, 264600, 441000, 441001]:
        valid = model.valid_length(length)
        assert valid >= length and model.valid_length(valid) == valid
        if length > 4778:
            assert valid - length < 4**6 // 2  # the valid lengths are 2048 apart (×2 up-sampling)
        frames = 2 * valid
        for _ in range(6):  # every strided convolution divides its input exactly
            assert (frames - 8) % 4 == 0
            frames = (frames - 8) // 4 + 1


@pytest.mark.parametrize("length", [1, 2, 3, 100, 997, 1000, 4096, 7919, 12345])
def test_output_has_exactly_the_input_length(length):
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, length))
    assert out.shape == (2, 4, 2, length)
    assert torch.isfinite(out).all()


def test_full_depth_exact_length_and_last_samples_get_estimates():
    model = tiny(channels=2, depth=6).eval()
    x = torch.randn(1, 2, 4779, requires_grad=True)  # one past a valid length: the worst padding
    out = model(x)
    assert out.shape == (1, 4, 2, 4779)
    # the original dropped up to ~2k trailing samples; here the last output sample depends on the last input sample
    out[..., -1].sum().backward()
    assert x.grad[..., -1].abs().sum() > 0
    with torch.no_grad():
        assert model(torch.randn(1, 2, 1)).shape == (1, 4, 2, 1)


@pytest.mark.parametrize("length", [1000, 3001])  # padded by 66 and 113 samples, i.e. cropped at 33 and 56
def test_output_is_time_aligned_with_the_input(length):
    model = tiny().double().eval()
    x = torch.randn(1, 2, length, dtype=torch.float64, requires_grad=True)
    out = model(x)
    for t in (length // 4, length // 2, 3 * length // 4):
        (grad,) = torch.autograd.grad(out[..., t].sum(), x, retain_graph=True)
        # output sample t depends most on input samples near t (a wrong crop offset would shift this by ≥ 33)
        assert abs(grad.abs().sum(dim=1)[0].argmax().item() - t) <= 8


def test_standardize_round_trip_and_reference_statistics():
    x = 0.3 * torch.randn(3, 2, 1000, dtype=torch.float64) + 0.1
    z, mean, std = standardize(x)
    mono = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(mean, mono.mean(dim=-1, keepdim=True))
    torch.testing.assert_close(std, mono.std(dim=-1, keepdim=True) + 1e-5)  # unbiased, eps added
    torch.testing.assert_close(z.mean(dim=1).mean(dim=-1), torch.zeros(3, dtype=torch.float64))
    stems = torch.stack([x, 2 * x, -x, x], dim=1)
    back = destandardize(torch.stack([z, 2 * z, -z, z], dim=1), mean, std)
    torch.testing.assert_close(
        back, stems + torch.tensor([0.0, -1.0, 2.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1) * mean.unsqueeze(1)
    )
    # a single sample has zero spread, not NaN
    z1, _, std1 = standardize(torch.randn(1, 2, 1))
    assert torch.isfinite(z1).all() and torch.isfinite(std1).all()


def test_model_is_scale_and_shift_equivariant_through_standardisation():
    model = tiny().double().eval()
    x = torch.randn(1, 2, 3000, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        scale = ref.abs().max()
        for a in (0.25, 4.0):
            # exact but for the eps added to std (1e-5 against std ≈ 0.7)
            torch.testing.assert_close(model(a * x), a * ref, atol=1e-4 * a * scale, rtol=0)
        torch.testing.assert_close(model(x + 0.5), ref + 0.5, atol=1e-9, rtol=0)


def test_source_and_channel_layout():
    model = tiny().eval()
    top = model.decoder[-1].deconv
    with torch.no_grad():
        top.weight.zero_()
        top.bias.copy_(torch.arange(8, dtype=torch.float32))  # channel 2·j + c = source j, audio channel c
        x = torch.randn(2, 2, 2000)
        out = model(x)
        _, mean, std = standardize(x)
    expected = torch.arange(8.0).view(1, 4, 2, 1) * std.unsqueeze(1) + mean.unsqueeze(1)
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-4, rtol=1e-4)


def _source_slices(level: DecoderLevel, source: int) -> list[torch.Tensor]:
    """The parameter rows that belong to ``source`` in one decoder level."""
    w = level.width
    hidden, outs = slice(2 * w * source, 2 * w * (source + 1)), level.deconv.out_channels // level.sources
    return [
        level.pre_conv.weight[hidden],
        level.pre_conv.bias[hidden],
        level.skip_conv.weight[hidden],
        level.deconv.weight[w * source : w * (source + 1)],
        level.deconv.bias[outs * source : outs * (source + 1)],
    ]


@pytest.mark.parametrize("source", [0, 3])
def test_per_source_decoders_are_independent(source):
    model = tiny().eval()
    x = torch.randn(1, 2, 1500)
    with torch.no_grad():
        before = model(x)
        for level in model.decoder:
            for p in _source_slices(level, source):
                p.add_(0.5 * torch.randn_like(p))
        # the source's quarter of the bottleneck projection too
        w = model.decoder[0].width
        model.lstm.linear.weight[w * source : w * (source + 1)] *= 1.5
        after = model(x)
    others = [j for j in range(4) if j != source]
    torch.testing.assert_close(after[:, others], before[:, others], atol=1e-6, rtol=1e-5)
    assert (after[:, source] - before[:, source]).abs().max() > 1e-3


@pytest.mark.parametrize("config", [{}, {"depth": 3, "lstm_layers": 0, "resample": False}])
def test_batched_cpu_inference_equals_item_by_item(config):
    # no gradients + batch > 1 on CPU: convolutions item by item, the bottleneck on the batch (step by step)
    model = tiny(**config).eval()
    x = torch.randn(3, 2, 2345)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        items = torch.cat([model(x[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(model(x), items)
        torch.testing.assert_close(scripted(x), items)
    torch.testing.assert_close(model(x).detach(), items)  # with gradients: one batched pass


@pytest.mark.parametrize("config", [{}, {"depth": 3, "lstm_layers": 0, "resample": False}])
def test_torchscript_matches_eager(config):
    model = tiny(**config).eval()
    scripted = torch.jit.script(model)
    for length in (1, 1234):
        x = torch.randn(2, 2, length)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x))
    assert scripted.valid_length(1234) == model.valid_length(1234)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    "cin,cout,kernel,stride,groups", [(96, 8, 8, 4, 4), (8, 6, 7, 3, 2), (4, 4, 3, 1, 1), (4, 8, 2, 4, 1)]
)
@pytest.mark.parametrize("frames", [37, 1100])  # phase-split path, and torch's for short inputs
def test_phase_conv_transpose_matches_torch(cin, cout, kernel, stride, groups, frames):
    torch.manual_seed(0)
    conv = PhaseConvTranspose1d(cin, cout, kernel, stride, groups=groups).double()
    conv.min_frames = 1000 - frames  # 37 → phase path, 1100 → torch's
    x = torch.randn(2, cin, frames, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    ref = F.conv_transpose1d(x, conv.weight, conv.bias, stride=stride, groups=groups)
    assert out.shape == ref.shape == (2, cout, (frames - 1) * stride + kernel)
    torch.testing.assert_close(out, ref)
    # same gradients for input and weight
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, conv.weight), g)
    ref_grads = torch.autograd.grad(ref, (x, conv.weight), g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("old_sr,new_sr", [(1, 2), (2, 1), (3, 2)])
def test_block_resample_matches_julius(old_sr, new_sr):
    mine = torch.jit.script(BlockResample(old_sr, new_sr))
    ref = julius.ResampleFrac(old_sr, new_sr).double()
    for length in (1, 2, 3, 31, 32, 33, 1000, 4099):
        x = torch.randn(2, 3, length, dtype=torch.float64)
        expected = ref(x)
        out = mine(x)
        assert out.shape == expected.shape == (2, 3, new_sr * length // old_sr)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    assert not BlockResample(1, 2).state_dict()  # fixed filters stay out of checkpoints


@pytest.mark.parametrize("batch,frames", [(1, 1), (3, 9), (5, 4)])  # one row, and both weight layouts
def test_cpu_training_lstm_matches_nn_lstm(batch, frames):
    torch.manual_seed(0)
    blstm = BLSTM(6, 2, 5).double()
    x = torch.randn(batch, 6, frames, dtype=torch.float64, requires_grad=True)
    assert blstm._use_steps(x.permute(2, 0, 1))
    out = blstm(x)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *blstm.parameters()], grad)
    blstm._use_steps = lambda x: False  # the nn.LSTM path, as in batch-1 inference
    ref = blstm(x)
    ref_grads = torch.autograd.grad(ref, [x, *blstm.parameters()], grad)
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("batch", [3, 5])
def test_cpu_batched_inference_lstm_matches_nn_lstm(batch):
    torch.manual_seed(0)
    blstm = BLSTM(6, 2, 5).double().eval()
    x = torch.randn(batch, 6, 9, dtype=torch.float64)
    with torch.inference_mode():
        # batch 1 keeps nn.LSTM; larger batches take the recurrence (oneDNN's LSTM is slow there)
        assert not blstm._use_steps(x[:1].permute(2, 0, 1))
        assert blstm._use_steps(x.permute(2, 0, 1))
        out = blstm(x)
        ref = torch.cat([blstm(x[i : i + 1]) for i in range(batch)])
    torch.testing.assert_close(out, ref)


def test_recurrent_weight_layout_per_row_count():
    w = torch.randn(8, 3)
    for rows, wanted_stride in [(1, (3, 1)), (2, (1, 8)), (3, (1, 8)), (4, (3, 1)), (9, (3, 1))]:
        for matrix in (w, w.t().contiguous().t()):  # either layout in
            laid_out = _matrix_for_rows(matrix, rows)
            assert torch.equal(laid_out, w)
            if rows == 1:
                assert laid_out is matrix  # no copy for a matrix-vector product
            else:
                assert laid_out.stride() == wanted_stride
                assert (laid_out is matrix) == (matrix.stride() == wanted_stride)


def test_rescale_init():
    torch.manual_seed(0)
    conv = nn.Conv1d(8, 16, 3)
    std, bias = conv.weight.std().item(), conv.bias.clone()
    rescale_conv_(conv, 0.1)
    assert conv.weight.std().item() == pytest.approx((0.1 * std) ** 0.5, rel=1e-5)
    torch.testing.assert_close(conv.bias, bias / (std / 0.1) ** 0.5)


def test_registry_bad_config_and_bad_input():
    model = build_model({"type": "demucs", "args": {"channels": 4, "depth": 3, "lstm_layers": 0, "resample": False}})
    assert isinstance(model, DemucsSplit)
    with torch.no_grad():
        assert model(torch.randn(1, 2, 777)).shape == (1, 4, 2, 777)
    with pytest.raises(ConfigError, match="channels"):
        DemucsSplit(channels=1)
    with pytest.raises(ConfigError, match="kernel_size"):
        DemucsSplit(kernel_size=2, stride=4)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build_model({"type": "DemucsSplit", "args": {"chanels": 4}})
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 1, 100))


def test_a_few_training_steps_reduce_the_l1_loss():
    model = tiny(channels=8).train()
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 44100
    # four "sources" with distinct spectra, random gains per item
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (60.0, 110.0, 880.0, 440.0)])
    stems = tones.view(1, 4, 1, -1) * torch.rand(2, 4, 2, 1, generator=gen)
    mix = stems.sum(dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = (model(mix) - stems).abs().mean()  # the L1 waveform loss of §8
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # from the rescaled init the loss falls slowly but steadily (≈ 0.4 % a step here)
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.99 * losses[0], losses


@pytest.mark.parametrize("length,expected", [(441000, 438954), (264600, 262826)])
def test_legacy_output_lengths_are_the_originals(length, expected):
    # no valid-length padding: the original's output falls short (reference §8 gives these two)
    model = tiny(depth=6, legacy=True).eval()
    assert model.grid == 2048
    with torch.no_grad():
        assert model(torch.randn(1, 2, length)).shape == (1, 4, 2, expected)


def test_legacy_batches_itemwise_and_scripts():
    model = tiny(legacy=True).eval()
    x = torch.randn(3, 2, 3000)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        items = torch.cat([model(x[i : i + 1]) for i in range(3)])
        assert items.shape[-1] < 3000
        torch.testing.assert_close(model(x), items)
        torch.testing.assert_close(scripted(x), items)
