"""The original release rebuilt as fixtures (``tests/original_release``): its files' layout at full size, the I/O
contract and quirks of tiny files, the blocks against independent formulations, and danna-sep 1.0.2's pipeline."""

import csv
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from original_release import (
    FAST_WEIGHTS,
    FILES,
    ONNX_FILE,
    TINY,
    WEIGHTS,
    X_UMX,
    D2_block,
    D3_block,
    DemucsSplit,
    MultiHeadAttention,
    UNetAttn,
    build_models,
    demucs_sep,
    example_mix,
    load_model,
    model_estimates,
    pipeline,
    randomize,
    script,
    separate_original,
    spectrogram,
    tf_sep,
    unet_masks,
    write_release,
)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

TABLE = Path(__file__).parent / "data" / "released_checkpoints.tsv"
SHORT = 64 * 1024 + 123  # a short clip: 66 frames after danna-sep's 1024-sample pad (the U-Net needs 64)
TWO_FRAME_TAIL = 2584 * 1024 + 100  # + 1024 → 2586 frames: one 2584-frame U-Net chunk and one of 2


def release_layout(file: str) -> list:
    """``(key, shape, dtype)`` of the released ``file`` (``tests/data/released_checkpoints.tsv``), in file order."""
    with open(TABLE, newline="") as f:
        return [(r["key"], r["shape"], r["dtype"]) for r in csv.DictReader(f, delimiter="\t") if r["file"] == file]


def layout(module: torch.nn.Module) -> list:
    return [(k, str(tuple(v.shape)), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def models():
    return build_models("tiny", seed=0)


@pytest.fixture(scope="module")
def files(models, tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("release"), models=models)


@pytest.fixture(scope="module")
def long_mix():
    """(2, TWO_FRAME_TAIL): about 60 s."""
    return example_mix(TWO_FRAME_TAIL, seed=13)


@pytest.fixture(scope="module")
def roles(files):
    """role → release file, as danna-sep 1.0.2 ships them (X-UMX as ONNX)."""
    return {"xumx": files[ONNX_FILE], "unet": files[FILES["unet"]], "demucs": files[FILES["demucs"]]}


# --- (a) full size: the released files' layout -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, file, params",
    [
        (X_UMX, "xumx_mwf.pth", 35_573_392),
        (UNetAttn, "unet_attention.pth", 15_676_652),
        (DemucsSplit, "demucs_4_decoders.pth", 191_928_152),
    ],
)
def test_full_size_is_the_released_layout(cls, file, params):
    """Scripted at full size: the released file's keys, shapes, dtypes and order, its parameter count and name."""
    model = cls().eval()
    scripted = script(model)
    assert scripted.original_name == cls.__name__
    assert layout(scripted) == release_layout(file)
    assert sum(p.numel() for p in model.parameters()) == params
    if cls is UNetAttn:  # full geometry: 1485 of the 1487 bins and T − 1 frames covered, 0.25 elsewhere
        with torch.no_grad():
            masks = scripted(torch.rand(1, 2, 2049, 64))
        assert masks.shape == (1, 4, 2, 2049, 64)
        assert (masks[..., 1485:, :] == 0.25).all() and (masks[..., -1] == 0.25).all()
        assert not (masks[..., :1485, :63] == 0.25).any()


# --- (b) tiny release files: I/O contract ------------------------------------------------------------------------


def test_tiny_files_keep_the_io_contract(models, files):
    names = {"xumx": "X_UMX", "unet": "UNetAttn", "demucs": "DemucsSplit"}
    mag = spectrogram(example_mix(69 * 1024, seed=1))[1].unsqueeze(0).contiguous()  # (1, 2, 2049, 70)
    wav = example_mix(50_000, seed=2).unsqueeze(0)
    with torch.no_grad():
        for role, name in FILES.items():
            loaded = torch.jit.load(str(files[name]))
            assert loaded.original_name == names[role]
            x = wav if role == "demucs" else mag
            out = loaded(x)
            torch.testing.assert_close(out, models[role](x), rtol=1e-5, atol=1e-6)
            if role == "demucs":
                assert out.shape[:3] == (1, 4, 2) and 49_000 < out.shape[3] <= 50_000
            else:
                assert out.shape == (1, 4, 2, 2049, 70)


def test_onnx_xumx_is_the_releases_and_equals_torchscript(files):
    proto = onnx.load(str(files[ONNX_FILE]))
    assert [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")] == [11]

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in proto.graph.input] == [("input", [1, 2, 2049, "frames"])]
    assert [(v.name, dims(v)) for v in proto.graph.output] == [("output", [1, 4, 2, 2049, "frames"])]
    onnx_model, scripted = load_model(files[ONNX_FILE]), torch.jit.load(str(files[FILES["xumx"]]))
    for frames in (64, 101):  # the export's own length and another one
        mag = spectrogram(example_mix((frames - 1) * 1024, seed=frames))[1].unsqueeze(0).contiguous()
        with torch.no_grad():
            expected = scripted(mag)
        got = onnx_model(mag)
        assert got.shape == (1, 4, 2, 2049, frames)
        assert relative_error(got, expected) < 1e-5


def test_demucs_output_is_short_as_the_release(files):
    """No valid-length padding: 441000 → 438954 and 264600 → 262826 samples (reference §8), tiny or full."""
    model = torch.jit.load(str(files[FILES["demucs"]]))
    with torch.no_grad():
        assert model(torch.randn(1, 2, 441000) * 0.1).shape == (1, 4, 2, 438954)
        wav = example_mix(264600, seed=3).unsqueeze(0)
        assert model(wav).shape == (1, 4, 2, 262826)


# --- (c) the release's quirks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames, tail", [(128, 1), (129, 2)])
def test_unet_leaves_0_25_on_uncovered_bins_and_last_frames(models, frames, tail):
    """The tiny U-Net covers 2·⌊95/2⌋ − 1 = 93 bins (as 1487 → 1485) and 2·⌊T/2⌋ − 1 frames."""
    mag = spectrogram(example_mix((frames - 1) * 1024, seed=frames))[1].unsqueeze(0)
    with torch.no_grad():
        masks = models["unet"](mag)
    covered = 2 * (TINY["unet"]["max_bins"] // 2) - 1
    assert covered == 93
    assert (masks[..., covered:, :] == 0.25).all()
    assert (masks[..., frames - tail :] == 0.25).all()
    assert not (masks[..., :covered, : frames - tail] == 0.25).any()


def test_xumx_needs_a_contiguous_input_as_the_release(files):
    """``.view`` on the input: the STFT's transposed layout fails in TorchScript; ONNX (1.0.2) takes any strides."""
    scripted, onnx_model = torch.jit.load(str(files[FILES["xumx"]])), load_model(files[ONNX_FILE])
    mag = spectrogram(example_mix(80 * 1024, seed=4))[1].unsqueeze(0)
    assert not mag.is_contiguous()
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="view"):
            scripted(mag)
        with pytest.raises(RuntimeError, match="view"):
            tf_sep(scripted, example_mix(80 * 1024, seed=4))
        expected = scripted(mag.contiguous())
    assert relative_error(onnx_model(mag), expected) < 1e-5


# --- randomize: deterministic, non-degenerate ---------------------------------------------------------------------


def test_randomize_is_deterministic_with_nontrivial_batchnorm(models):
    again = randomize(UNetAttn(**TINY["unet"]), seed=1)  # build_models gives the U-Net of seed 0 the stream 1
    for (key, a), b in zip(models["unet"].state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    other = randomize(UNetAttn(**TINY["unet"]), seed=2)
    assert not torch.equal(other.end[3].weight, again.end[3].weight)
    for role in ("xumx", "unet"):
        norms = [m for m in models[role].modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert norms
        for bn in norms:
            assert (bn.running_mean.abs() > 1e-4).any() and ((bn.running_var - 1).abs() > 1e-2).any()
            assert ((bn.weight - 1).abs() > 1e-2).any() and (bn.bias.abs() > 1e-2).any()


def test_randomized_models_are_not_degenerate(models):
    """Masks spread around 0.5 (neither all zero nor saturated), sources that differ, Demucs at the mix's scale."""
    wav = example_mix(255 * 1024, seed=99)  # not the calibration signal
    mag = spectrogram(wav)[1].unsqueeze(0).contiguous()  # (1, 2, 2049, 256)
    with torch.no_grad():
        xumx = models["xumx"](mag)
        unet = models["unet"](mag)[..., :93, :255]  # the bins and frames it covers
        demucs = models["demucs"](wav.unsqueeze(0))
    assert 0.3 < xumx.mean() < 0.8 and xumx.std() > 0.15 and (xumx == 0).float().mean() < 0.3
    assert 0.3 < unet.mean() < 0.7 and unet.std() > 0.05 and ((unet < 0.01) | (unet > 0.99)).float().mean() < 0.01
    for estimate in (xumx, unet, demucs):
        assert (estimate[0, 0] - estimate[0, 1]).abs().mean() > 0.1 * estimate.std()
    assert 0.1 < demucs.std() / wav.std() < 2


# --- the blocks against independent formulations ----------------------------------------------------------------


def _randomize_batchnorm(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            for t in (bn.weight.data, bn.running_var):
                t.uniform_(0.5, 1.5, generator=g)
            for t in (bn.bias.data, bn.running_mean):
                t.uniform_(-0.5, 0.5, generator=g)


@pytest.mark.parametrize("last_n_layers", [4, 2])
def test_d2_block_is_a_multi_dilated_dense_block(last_n_layers):
    """Layer i's pre-activation = Σ_{j ≤ i} conv_j(feature_j), dilation 2**j, with piece i − j of conv_j's weight."""
    torch.manual_seed(0)
    k, L = 3, 4
    block = D2_block(5, k, L, last_n_layers).eval()
    _randomize_batchnorm(block)
    x = torch.randn(2, 5, 19, 23)
    features = [x]
    with torch.no_grad():
        for i in range(L):
            pre = sum(
                F.conv2d(
                    features[j], block.conv_layers[j].weight[k * (i - j) : k * (i - j + 1)], padding=2**j, dilation=2**j
                )
                for j in range(i + 1)
            )
            features.append(block.bn_layers[i](pre))
        expected = torch.cat(features[1:][-last_n_layers:], 1)
        torch.testing.assert_close(script(block)(x), expected, rtol=1e-5, atol=1e-5)


def test_d3_block_stacks_its_input_and_the_d2_outputs():
    torch.manual_seed(0)
    block = D3_block(4, M=2, k=2, L=3).eval()
    _randomize_batchnorm(block)
    x = torch.randn(1, 4, 10, 12)
    with torch.no_grad():
        o1 = block.d2_layers[0](x)
        o2 = block.d2_layers[1](torch.cat([x, o1], 1))
        torch.testing.assert_close(block(x), torch.cat([x, o1, o2], 1))


def _naive_attention(mha: MultiHeadAttention, x: torch.Tensor, zero_key_bias: float) -> torch.Tensor:
    """One query at a time: all rows × the query's 2-frame block ± 3 frames, zero keys beyond the padded time."""
    qkv = mha.qkv_conv(x)
    batch, _, bins, frames = qkv.shape
    size, flange, depth = mha.query_shape, mha.memory_flange, mha.depth
    padded = math.ceil(frames / size) * size
    qkv = F.pad(qkv, [0, padded - frames])
    out = torch.zeros(batch, mha.n_heads * depth, bins, padded)
    for b in range(batch):
        for h in range(mha.n_heads):
            head = qkv[b, h * 3 * depth : (h + 1) * 3 * depth]
            q, k, v = head[:depth], head[depth : 2 * depth], head[2 * depth :]
            for t in range(padded):
                start = t // size * size - flange
                keys, values = [], []
                for s in range(start, start + size + 2 * flange):
                    inside = 0 <= s < padded
                    keys.append(k[:, :, s] if inside else torch.zeros(depth, bins))
                    values.append(v[:, :, s] if inside else torch.zeros(depth, bins))
                keys, values = torch.cat(keys, 1), torch.cat(values, 1)  # (depth, bins · window)
                for f in range(bins):
                    logits = q[:, f, t] @ keys * depth**-0.5
                    logits = logits + torch.where((keys == 0).all(0), zero_key_bias, 0.0)
                    out[b, h * depth : (h + 1) * depth, f, t] = values @ logits.softmax(0)
    return mha.out_conv(out[..., :frames])


def test_local_attention_against_a_per_query_loop():
    """The −1e-9 bias leaves padded keys in the softmax: it matches the loop with −1e-9, not with −∞."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(3, 5, d_model=4, n_heads=2).eval()
    x = torch.randn(1, 3, 3, 7)  # odd frames: one padded frame besides the flanks
    with torch.no_grad():
        got = script(mha)(x)
        torch.testing.assert_close(got, _naive_attention(mha, x, -1e-9), rtol=1e-5, atol=1e-5)
        masked = _naive_attention(mha, x, -math.inf)
    assert (got - masked).abs().max() > 1e-3


# --- (d) danna-sep 1.0.2 ------------------------------------------------------------------------------------------


def test_blend_weights_sum_to_one_per_source():
    for table in (WEIGHTS, FAST_WEIGHTS):
        torch.testing.assert_close(sum(table.values()), torch.ones(4))


def test_separate_original_blends_the_models_estimates(roles, monkeypatch):
    calls = []  # the estimates separate_original blends, recorded instead of computed twice

    def recorded(*args, **kwargs):
        calls.append(model_estimates(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(pipeline, "model_estimates", recorded)
    wav = example_mix(SHORT, seed=11)
    result = separate_original(wav, roles)
    (estimates,) = calls
    assert list(estimates) == ["unet", "demucs", "xumx"]
    assert result.shape == (4, 2, SHORT) and result.dtype == torch.float32 and torch.isfinite(result).all()
    expected = sum(WEIGHTS[role][:, None, None] * estimates[role] for role in ("unet", "demucs", "xumx"))
    torch.testing.assert_close(result, expected)
    for role, pred in estimates.items():
        assert pred.shape == (4, 2, SHORT) and pred.abs().max() > 1e-3, role
    fast_files = {role: roles[role] for role in ("unet", "demucs")}  # --fast needs no X-UMX
    fast = separate_original(wav, fast_files, fast=True)
    assert list(calls[1]) == ["unet", "demucs"]
    for role in calls[1]:
        torch.testing.assert_close(calls[1][role], estimates[role], rtol=0, atol=0)
    expected = (
        FAST_WEIGHTS["unet"][:, None, None] * estimates["unet"]
        + FAST_WEIGHTS["demucs"][:, None, None] * estimates["demucs"]
    )
    torch.testing.assert_close(fast, expected)


def test_tf_sep_with_equal_masks_splits_the_mix_in_four():
    """Four equal estimates: the Wiener filter gives each a quarter of the mixture; iSTFT without a length."""
    y = F.pad(example_mix(SHORT, seed=12), [0, 1024])

    def ones(mag):
        return torch.ones(1, 4, *mag.shape[1:])

    out = tf_sep(ones, y)
    length = 1024 * (y.shape[1] // 1024)
    assert out.shape == (4, 2, length) and out.dtype == torch.float32
    torch.testing.assert_close(out, (y[:, :length] / 4).expand(4, -1, -1), rtol=0, atol=1e-5)


def test_demucs_sep_reads_the_output_after_the_22050_zeros():
    """The model sees [22050 zeros | y]; what it does not reach stays 0; the result is clamped to ±0.99."""
    y = torch.randn(2, 30_000) * 0.6
    seen = []

    def echo(x):  # each source = the input, 3000 samples short, as a Demucs without valid-length padding
        seen.append(x)
        return x[:, None].repeat(1, 4, 1, 1)[..., :-3000]

    out = demucs_sep(echo, y)
    (x,) = seen
    assert x.shape == (1, 2, 52_050) and (x[..., :22050] == 0).all() and torch.equal(x[0, :, 22050:], y)
    torch.testing.assert_close(out[..., :27_000], y[:, :27_000].clamp(-0.99, 0.99).expand(4, -1, -1))
    assert (out[..., 27_000:] == 0).all() and out.abs().max() == 0.99


def test_unet_chunks_of_2584_frames_and_the_short_last_chunk(models, long_mix):
    """A 2-frame last chunk: "crash" fails its poolings as 1.0.2 did; "pad128" runs it zero-padded to 128 frames."""
    model = models["unet"]
    mag = spectrogram(F.pad(long_mix, [0, 1024]))[1]
    assert mag.shape == (2, 2049, 2586)
    calls = []

    def recorded(x):
        calls.append((x, model(x)))
        return calls[-1][1]

    with torch.no_grad():
        with pytest.raises(RuntimeError):  # (the 2584-frame chunk's masks do not matter here: zeros save 1 s)
            unet_masks(lambda x: model(x) if x.shape[-1] < 64 else torch.zeros(1, 4, 2, 2049, x.shape[-1]), mag)
        masks = unet_masks(recorded, mag, short_chunk="pad128")
    (first, out_first), (last, out_last) = calls
    assert torch.equal(first[0], mag[..., :2584]) and last.shape == (1, 2, 2049, 128)
    assert torch.equal(last[0, ..., :2], mag[..., 2584:]) and (last[..., 2:] == 0).all()
    assert masks.shape == (4, 2, 2049, 2586)
    assert torch.equal(masks[..., :2584], out_first[0]) and torch.equal(masks[..., 2584:], out_last[0, ..., :2])
    with pytest.raises(ValueError, match="short_chunk"):
        unet_masks(recorded, mag, short_chunk="pad")


def test_separate_original_crashes_on_a_two_frame_last_chunk(roles, long_mix):
    with torch.no_grad(), pytest.raises(RuntimeError):
        separate_original(long_mix, roles, short_chunk="crash")


def test_separate_original_pad128_runs_a_short_last_chunk(roles, monkeypatch):
    """End to end with 130-frame chunks (a 60 s clip's Wiener filters and iSTFTs take half a minute): the
    132-frame clip's last chunk of 2 frames crashes, or is padded to 128 frames."""
    monkeypatch.setattr(pipeline, "UNET_CHUNK", 130)
    n = 130 * 1024 + 100
    wav = example_mix(n, seed=15)
    with pytest.raises(RuntimeError):
        separate_original(wav, roles, short_chunk="crash")
    result = separate_original(wav, roles, short_chunk="pad128")
    assert result.shape == (4, 2, n) and torch.isfinite(result).all()
    np.testing.assert_array_less(0.0, result.abs().amax(-1).numpy())
