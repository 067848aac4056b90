"""Exact chunked inference for ``--original``: ``DemucsSplit.forward_chunked`` and ``UNetAttn.forward_tiled``
compute what ``forward`` computes on the whole input (to float rounding), and the ``--original`` streams use them."""

import pytest
import torch

from danna_sep.inference import ORIGINAL_DEMUCS_LEAD, LoadedModel, ModelInfo
from danna_sep.models.demucs import DemucsSplit
from danna_sep.separate.streams import ModelCalls, _original_waveform_stream
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
