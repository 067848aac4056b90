"""Exact chunked inference for ``--original``: ``DemucsSplit.forward_chunked``, ``UNetAttn.forward_tiled`` and
``X_UMX.forward_chunked`` compute what ``forward`` computes on the whole input (to float rounding), and the
``--original`` streams use them."""

import dataclasses

import pytest
import torch

from danna_sep.inference import ORIGINAL_DEMUCS_LEAD, LoadedModel, ModelInfo
from danna_sep.models.demucs import DemucsSplit
from danna_sep.models.fuse import fold_batchnorm
from danna_sep.models.unet import UNetAttn
from danna_sep.models.xumx import X_UMX
from danna_sep.separate.streams import (
    ORIGINAL_UNET_CHUNK,
    ModelCalls,
    StreamOptions,
    _original_waveform_stream,
    _spectral_stream,
)
from danna_sep.separate.tracks import TensorReader

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def demucs(**kwargs) -> DemucsSplit:
    torch.manual_seed(0)
    args = dict(channels=4, depth=4, lstm_layers=1)
    args.update(kwargs)
    return DemucsSplit(**args).eval()


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("legacy", [False, True], ids=["exact-length", "legacy"])
@pytest.mark.parametrize("resample", [True, False], ids=["resample", "no-resample"])
@pytest.mark.parametrize("length", [3001, 20000, 44111])
def test_demucs_chunked_equals_forward(legacy, resample, length):
    model = demucs(legacy=legacy, resample=resample)
    x = torch.randn(2, 2, length)
    with torch.no_grad():
        ref = model(x)
        # chunk sizes that divide nothing, one far below a bottom frame and one above the whole input
        for chunk in (333, 4099, 10**6):
            got = model.forward_chunked(x, chunk)
            assert got.shape == ref.shape
            assert relative_error(got, ref) < 1e-5, (chunk, relative_error(got, ref))


def test_demucs_chunked_pieces_are_consecutive_and_bounded():
    model = demucs(depth=3, legacy=True)
    x = torch.randn(1, 2, 30011)
    with torch.no_grad():
        pieces = list(model.iter_chunked(x, 5000))
        ref = model(x)
    assert [p.shape[-1] for p in pieces[:-1]] == [5000] * (len(pieces) - 1)
    assert 0 < pieces[-1].shape[-1] <= 5000
    assert relative_error(torch.cat(pieces, -1), ref) < 1e-5


def test_demucs_chunked_deep_reference_layout_and_no_lstm():
    # depth 6, stride 4: one bottom frame is 2048 input samples, more than the chunk
    model = demucs(depth=6, channels=2, legacy=True, lstm_layers=0)
    x = torch.randn(1, 2, 50_000)
    with torch.no_grad():
        assert relative_error(model.forward_chunked(x, 3000), model(x)) < 1e-5


def test_demucs_chunked_short_legacy_input_fails_as_forward():
    model = demucs(legacy=True)
    x = torch.randn(1, 2, 40)  # fewer samples than the unpadded convolutions need
    with pytest.raises(RuntimeError), torch.no_grad():
        model(x)
    with pytest.raises(RuntimeError), torch.no_grad():
        model.forward_chunked(x, 100)


def test_demucs_still_scripts_and_scripted_forward_is_unchanged():
    model = demucs(legacy=True)
    scripted = torch.jit.script(model)
    assert not hasattr(scripted, "forward_chunked")
    x = torch.randn(1, 2, 9000)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_original_waveform_stream_chunked_equals_the_whole_song_call(monkeypatch):
    from danna_sep.separate import streams

    monkeypatch.setattr(streams, "ORIGINAL_DEMUCS_CHUNK", 7001)
    model = demucs(legacy=True, depth=3)
    info = ModelInfo.from_model(model)
    wav = 0.3 * torch.randn(2, 40_000)
    eager = LoadedModel.from_module(model, info)
    # the same module behind a plain callable: the stream cannot cut it, it runs the whole song at once
    whole = LoadedModel(model, info, "torchscript", None, torch.device("cpu"))
    fractions: list[float] = []
    got = list(_original_waveform_stream(eager, TensorReader(wav), fractions.append, ModelCalls(False)))
    (ref,) = _original_waveform_stream(whole, TensorReader(wav), lambda _: None, ModelCalls(False))
    assert len(got) > 3 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    got_all = torch.cat(got, -1)
    assert got_all.shape == ref.shape == (4, 2, 40_000)
    # the legacy model returns fewer samples than it is given: the last ones stay zero in both
    with torch.no_grad():
        short = 40_000 + ORIGINAL_DEMUCS_LEAD - model(torch.zeros(1, 2, 40_000 + ORIGINAL_DEMUCS_LEAD)).shape[-1]
    assert short > 0
    assert ref[..., -short:].abs().max() == got_all[..., -short:].abs().max() == 0
    assert ref[..., -short - 1].abs().max() > 0
    assert relative_error(got_all, ref) < 1e-5


def unet(legacy: bool, levels: int = 4, **kwargs) -> UNetAttn:
    torch.manual_seed(0)
    args = dict(max_bins=40, k=3, levels=levels, d_model=16, n_heads=2, attn_channels=8, rel_pos_bias=not legacy)
    args.update(kwargs)
    model = UNetAttn(legacy=legacy, **args).eval()
    with torch.no_grad():  # running statistics away from the identity, so that folding them changes the weights
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("legacy", [False, True], ids=["exact", "legacy"])
@pytest.mark.parametrize("frames", [64, 77, 301, 700])
def test_unet_tiled_equals_forward(legacy, frames):
    model = unet(legacy)
    x = torch.rand(1, 2, 45, frames)  # more bins than max_bins: the bins above are handled as in forward
    with torch.no_grad():
        ref = model(x)
        for tile in (8, 30, 100, 10**4):
            got = model.forward_tiled(x, tile)
            assert got.shape == ref.shape
            assert (got - ref).abs().max() < 1e-5, (tile, (got - ref).abs().max())


def test_unet_tiled_equals_forward_at_the_released_depth_on_an_original_chunk():
    # six levels as released: odd sizes from the third pooling on (2584 → … → 323 → 161 → 80 → 40 frames)
    model = unet(True, levels=6, k=2, max_bins=130)
    x = torch.rand(1, 2, 140, 2584)
    with torch.no_grad():
        assert (model.forward_tiled(x, 256) - model(x)).abs().max() < 1e-5


def test_unet_tiled_equals_forward_folded_and_batched():
    model = fold_batchnorm(unet(True))
    x = torch.rand(2, 2, 45, 333)
    with torch.no_grad():
        assert (model.forward_tiled(x, 40) - model(x)).abs().max() < 1e-5


def test_unet_time_radius_bounds_what_a_frame_reads():
    model = unet(False, levels=3)
    radius = model.time_radius()
    frames, at = 2 * radius + 64, radius + 32
    x = torch.rand(1, 2, 40, frames)
    y = x.clone()
    y[..., at] += 1.0
    with torch.no_grad():
        changed = (model(x) - model(y)).abs().amax((0, 1, 2, 3)) != 0  # per frame
    reach = changed.nonzero().flatten()
    # nothing beyond the radius changes, and the bound is not vacuous: the change reaches far (here about
    # 0.56 of the bound, which adds up every layer's full reach)
    assert reach.min() >= at - radius and reach.max() <= at + radius
    assert reach.max() - at > radius // 3 and at - reach.min() > radius // 3


def test_released_unet_reads_more_than_the_originals_chunk():
    with torch.device("meta"):
        released = UNetAttn(rel_pos_bias=False, legacy=True)
    assert released.time_radius() > ORIGINAL_UNET_CHUNK


def test_original_unet_stream_tiled_equals_the_whole_chunk_calls(monkeypatch):
    from danna_sep.separate import streams

    monkeypatch.setattr(streams, "ORIGINAL_UNET_CHUNK", 60)  # 3 chunks, the last one short
    monkeypatch.setattr(streams, "ORIGINAL_UNET_TILE", 16)
    model = unet(True, levels=3, max_bins=300)
    info = ModelInfo.from_model(model)
    wav = 0.3 * torch.randn(2, 140 * info.hop_length)
    options = StreamOptions(None, 0.0, False, 1, None, True)
    eager = LoadedModel.from_module(model, info)
    whole = LoadedModel(eager.module, info, "torchscript", None, torch.device("cpu"))
    calls: list[str] = []
    monkeypatch.setattr(UNetAttn, "forward_tiled", _spy(UNetAttn.forward_tiled, calls))
    got = torch.cat(
        list(_spectral_stream(eager, TensorReader(wav), lambda _: None, ModelCalls(False), options, "unet")), -1
    )
    assert len(calls) == 3
    ref = torch.cat(
        list(_spectral_stream(whole, TensorReader(wav), lambda _: None, ModelCalls(False), options, "unet")), -1
    )
    assert len(calls) == 3  # the plain callable ran each chunk at once
    assert got.shape == ref.shape == (4, 2, wav.shape[-1])
    assert relative_error(got, ref) < 1e-5


def _spy(method, calls: list[str]):
    def wrapped(self, *args, **kwargs):
        calls.append(method.__name__)
        return method(self, *args, **kwargs)

    return wrapped


def xumx() -> X_UMX:
    torch.manual_seed(0)
    model = X_UMX(n_fft=256, hidden_channels=16, max_bins=100, nb_layers=2).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("folded", [False, True], ids=["plain", "folded"])
def test_xumx_chunked_equals_forward(folded):
    model = fold_batchnorm(xumx()) if folded else xumx()
    x = torch.rand(2, 2, 129, 301)
    with torch.no_grad():
        ref = model(x)
        for chunk in (1, 37, 1000):
            got = model.forward_chunked(x, chunk)
            assert got.shape == ref.shape
            assert relative_error(got, ref) < 1e-6


def test_xumx_still_scripts_and_scripted_forward_is_unchanged():
    model = xumx()
    scripted = torch.jit.script(model)
    assert not hasattr(scripted, "forward_chunked")
    x = torch.rand(1, 2, 129, 50)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_original_xumx_stream_chunked_equals_the_whole_song_call(monkeypatch):
    from danna_sep.separate import streams

    monkeypatch.setattr(streams, "ORIGINAL_XUMX_CHUNK", 23)
    model = xumx()
    info = dataclasses.replace(ModelInfo.from_model(model), n_fft=256, hop_length=64)
    wav = 0.3 * torch.randn(2, 200 * info.hop_length)
    options = StreamOptions(None, 0.0, False, 1, None, True)
    eager = LoadedModel.from_module(model, info)
    whole = LoadedModel(eager.module, info, "torchscript", None, torch.device("cpu"))
    calls: list[str] = []
    monkeypatch.setattr(X_UMX, "forward_chunked", _spy(X_UMX.forward_chunked, calls))
    reader, plain = TensorReader(wav), ModelCalls(False)
    got = torch.cat(list(_spectral_stream(eager, reader, lambda _: None, plain, options, "xumx")), -1)
    assert len(calls) == 1  # the whole song in one call, cut inside the model
    ref = torch.cat(list(_spectral_stream(whole, reader, lambda _: None, plain, options, "xumx")), -1)
    assert len(calls) == 1
    assert got.shape == ref.shape == (4, 2, wav.shape[-1])
    assert relative_error(got, ref) < 1e-5
