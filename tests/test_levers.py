"""Inference speed levers (issue 19; ``benchmarks/bench_levers.py``): ``precision`` of
:class:`~danna_sep.inference.LoadedModel`, the separator and ``danna-sep --precision``."""

from __future__ import annotations

import threading

import pytest
import torch
from original_release import build_models, example_mix
from torch import Tensor

from danna_sep.commands import separate as separate_command
from danna_sep.errors import ConfigError
from danna_sep.inference import BF16_ROLES, BF16_SDR_DB, PRECISIONS, LoadedModel, check_precision, precision_context
from danna_sep.release.convert import build_imported
from danna_sep.spectral import STFT

pytestmark = pytest.mark.usefixtures("one_thread")


def sdr(ref: Tensor, out: Tensor) -> Tensor:
    """SDR (dB) per source (axis 1) of ``out`` against ``ref``."""
    dims = [d for d in range(ref.dim()) if d != 1]
    return 10 * torch.log10(ref.double().square().sum(dims) / (ref.double() - out.double()).square().sum(dims))


@pytest.fixture(scope="module")
def tiny() -> dict[str, LoadedModel]:
    """The tiny models with calibrated weights, imported into ours as the released weights are."""
    return {role: LoadedModel.from_module(build_imported(role, m)[1]) for role, m in build_models("tiny").items()}


def _input(role: str) -> Tensor:
    wav = example_mix(2 * 44100, seed=3)[None]
    return wav if role == "demucs" else STFT()(wav).abs()


@pytest.mark.parametrize("role", BF16_ROLES)
def test_bf16_stays_above_its_documented_floor(tiny: dict[str, LoadedModel], role: str) -> None:
    model = tiny[role]
    x = _input(role)
    fast = model.with_precision("bf16")
    assert fast.precision == "bf16" and model.precision == "fp32" and fast.module is model.module
    ref, out = model(x), fast(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    if role != "demucs":  # masks → the masked magnitudes the Wiener filter starts from
        ref, out = ref * x.unsqueeze(1), out * x.unsqueeze(1)
    quality = sdr(ref, out)
    assert (quality >= BF16_SDR_DB[role]).all(), quality
    assert (quality < 150).all(), "bf16 computed exactly what fp32 did: the lever is not applied"


def test_bf16_leaves_the_models_it_does_not_speed_up_in_fp32(tiny: dict[str, LoadedModel]) -> None:
    for role, model in tiny.items():
        fast = model.with_precision("bf16")  # the role from the model's metadata
        assert (fast.precision == "bf16") == (role in BF16_ROLES), role
        assert (fast is model) == (role not in BF16_ROLES)
    # a file without metadata (a released TorchScript file) gets its role from the caller
    assert tiny["unet"].with_precision("bf16", "xumx").precision == "bf16"


def test_fp32_is_the_model_itself(tiny: dict[str, LoadedModel]) -> None:
    model = tiny["xumx"]
    assert model.with_precision("fp32") is model
    x = _input("xumx")
    with torch.inference_mode():
        want = model.module(x)  # type: ignore[misc]
    assert torch.equal(model(x), want)


def test_bad_precision_is_a_clear_error(tiny: dict[str, LoadedModel]) -> None:
    with pytest.raises(ConfigError, match=r"precision must be one of fp32, bf16; got 'fp16'"):
        tiny["xumx"].with_precision("fp16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        check_precision("int8")
    from danna_sep.separate import Separator

    with pytest.raises(ConfigError, match="precision must be one of"):
        Separator(tiny, precision="half")


def test_separator_runs_its_models_in_its_precision(tiny: dict[str, LoadedModel]) -> None:
    from danna_sep.separate import Separator

    sep = Separator(tiny, precision="bf16")
    assert {role for role, m in sep.models.items() if m.precision == "bf16"} == set(BF16_ROLES)
    assert {m.precision for m in tiny.values()} == {"fp32"}  # the caller's models are left as they were
    assert Separator(tiny).models["unet"] is tiny["unet"]


def test_command_line_choices_are_the_precisions() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    separate_command.configure(parser)
    assert parser.parse_args(["song.wav"]).precision == "fp32"
    assert parser.parse_args(["song.wav", "--precision", "bf16"]).precision == "bf16"
    action = next(a for a in parser._actions if a.dest == "precision")
    assert tuple(action.choices or ()) == PRECISIONS
    with pytest.raises(SystemExit):
        parser.parse_args(["song.wav", "--precision", "fp16"])


def test_bf16_stays_in_its_own_thread() -> None:
    """A float32 model running beside a bf16 one (``Separator(parallel=True)``) stays float32."""
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with precision_context("bf16", torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu")
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert inside.wait(10)
        assert not torch.is_autocast_enabled("cpu")
        assert torch.backends.mkldnn.fp32_precision == "none"
    finally:
        release.set()
        thread.join(10)
