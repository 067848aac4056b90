"""The official pretrained X-UMX (Asteroid's file) → a danna-sep X-UMX checkpoint (``danna convert-xumx IN OUT``).

The input is Asteroid's serialisation of its ``XUMX`` model (e.g. ``pretrained_xumx_musdb18HQ.pth``): a dict with
``model_name``, ``state_dict``, ``model_args`` (and ``infos``). Its per-source modules are named by source::

    mean_scale.{input,output}_{mean,scale}_<src>     per-bin normalisation
    layer_enc.<src>.enc.{0: Linear, 1: BatchNorm1d}  encoder
    layer_lstm.<src>.*                               nn.LSTM
    layer_dec.<src>.dec.{0: Linear, 1: BatchNorm1d, 3: Linear, 4: BatchNorm1d}   decoder
    encoder.0.window, decoder.window                 STFT window (not a model weight here)

Each source's tensors go to its slot (drums, bass, other, vocals) of :class:`danna_sep.models.xumx.X_UMX`'s
per-source parameters. The file is read with ``weights_only=True`` (no pickled code runs), and every key and shape
is checked before anything is copied: a mismatch is a :class:`CheckpointError` that lists the missing, unexpected
and mis-shaped keys, never a partial load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import SAMPLE_RATE, SOURCES
from ..checkpoints import save_checkpoint
from ..errors import CheckpointError, ConfigError
from ..models.xumx import X_UMX

# keys of Asteroid's STFT/iSTFT window: accepted (shape-checked) but not part of X_UMX
_WINDOW_KEYS = ("encoder.0.window", "decoder.window")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def convert_file(src: Path | str, dst: Path | str) -> dict[str, Any]:
    """Read Asteroid's X-UMX file ``src``, write the danna-sep checkpoint ``dst`` (atomically) and return it."""
    src, dst = Path(src), Path(dst)
    try:
        package = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{src}: no such file") from None
    except Exception as exc:  # unpicklable content, not a torch file, truncated file, ...
        raise CheckpointError(f"{src}: cannot read as a weights-only torch file ({_load_failure(exc)})") from None
    checkpoint = convert_asteroid_xumx(package, name=str(src))
    save_checkpoint(checkpoint, dst)
    return checkpoint


def _load_failure(exc: Exception) -> str:
    """The one informative sentence of torch.load's (long, multi-line) error."""
    text = str(exc).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:  # e.g. "Unsupported global: GLOBAL foo.Bar was not an allowed global by default"
        text = text.split(marker, 1)[1].strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")


def convert_asteroid_xumx(package: Mapping[str, Any], name: str = "checkpoint") -> dict[str, Any]:
    """Asteroid's serialised XUMX dict → ``{"model": state_dict, "config": {"arch": ...}, "converted_from": ...}``."""
    if not isinstance(package, Mapping) or "state_dict" not in package or "model_args" not in package:
        found = sorted(package) if isinstance(package, Mapping) else type(package).__name__
        raise CheckpointError(
            f"{name}: not Asteroid's model serialisation (a dict with 'state_dict' and 'model_args'); found {found}"
        )
    model_name = package.get("model_name", "XUMX")
    if model_name != "XUMX":
        raise CheckpointError(f"{name}: model_name is {model_name!r}, expected 'XUMX'")
    arch_args, by_source = _arch_from_model_args(package["model_args"], name)
    state = package["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{name}: 'state_dict' is a {type(state).__name__}, not a dict of tensors")

    try:
        model = X_UMX(**arch_args)
    except ConfigError as exc:
        raise CheckpointError(f"{name}: model_args describe an X-UMX this project cannot build: {exc}") from None
    target = {k: v.clone() for k, v in model.state_dict().items()}
    plan = _conversion_plan(model, by_source)
    _check_keys(state, {k: tuple(target[ours][index].shape) for k, (ours, index) in plan.items()}, arch_args, name)

    for asteroid_key, (our_key, index) in plan.items():
        value = state[asteroid_key]
        if our_key.endswith("num_batches_tracked"):
            # one counter per BatchNorm here, one per source there: keep the largest
            target[our_key] = torch.maximum(target[our_key], value.to(target[our_key].dtype))
        else:
            target[our_key][index] = value.to(target[our_key].dtype)
    model.load_state_dict(target, strict=True)  # complete by construction; strict as a last guard

    infos = package.get("infos", {})
    return {
        "model": model.state_dict(),
        "config": {"arch": {"type": "X_UMX", "args": arch_args}},
        "converted_from": {
            "format": "asteroid XUMX",
            "file": os.path.basename(name),
            "model_args": {k: v for k, v in package["model_args"].items() if k not in ("input_mean", "input_scale")},
            "infos": infos if isinstance(infos, Mapping) else {},
        },
    }


def _arch_from_model_args(model_args: Any, name: str) -> tuple[dict[str, Any], dict[str, int]]:
    """X_UMX constructor arguments and ``{asteroid source name: our slot}`` from Asteroid's ``model_args``."""
    if not isinstance(model_args, Mapping):
        raise CheckpointError(f"{name}: 'model_args' is a {type(model_args).__name__}, not a dict")
    required = ("sources", "in_chan", "hidden_size", "nb_channels", "nb_layers")
    missing = [k for k in required if k not in model_args]
    if missing:
        raise CheckpointError(f"{name}: model_args lacks {', '.join(missing)}")
    sources = list(model_args["sources"])
    if sorted(sources) != sorted(SOURCES):
        raise CheckpointError(f"{name}: model_args.sources is {sources}; X_UMX needs exactly {list(SOURCES)}")
    problems = []
    try:
        n_fft = int(model_args["in_chan"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{name}: model_args.in_chan is {model_args['in_chan']!r}, not an FFT size") from None
    if int(model_args.get("window_length", n_fft)) != n_fft:
        problems.append(f"window_length {model_args['window_length']} != in_chan {n_fft}")
    if not model_args.get("bidirectional", True):
        problems.append("a unidirectional LSTM (X_UMX is bidirectional)")
    if model_args.get("spec_power", 1) != 1:
        problems.append(f"spec_power {model_args['spec_power']} (X_UMX takes the linear magnitude, power 1)")
    if int(model_args.get("sample_rate", SAMPLE_RATE)) != SAMPLE_RATE:
        problems.append(f"sample_rate {model_args['sample_rate']} (danna-sep runs at {SAMPLE_RATE} Hz)")
    if problems:
        raise CheckpointError(f"{name}: unsupported X-UMX variant: {'; '.join(problems)}")
    max_bin = model_args.get("max_bin") or n_fft // 2 + 1
    try:
        arch_args = {
            "n_fft": n_fft,
            "hidden_channels": int(model_args["hidden_size"]),
            "max_bins": int(max_bin),
            "nb_channels": int(model_args["nb_channels"]),
            "nb_layers": int(model_args["nb_layers"]),
        }
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: model_args has a non-integer size ({exc})") from None
    return arch_args, {src: SOURCES.index(src) for src in sources}


def _conversion_plan(model: X_UMX, by_source: dict[str, int]) -> dict[str, tuple[str, Any]]:
    """``{asteroid key: (our key, index into our tensor)}`` for every weight of Asteroid's XUMX."""
    hidden = model.hidden_channels
    out_features = model.nb_channels * model.nb_bins
    plan: dict[str, tuple[str, Any]] = {}

    def batch_norm(prefix: str, ours: str, slot: int, width: int) -> None:
        rows = slice(slot * width, (slot + 1) * width)
        for k in _BN_KEYS:
            plan[f"{prefix}.{k}"] = (f"{ours}.{k}", rows)
        plan[f"{prefix}.num_batches_tracked"] = (f"{ours}.num_batches_tracked", ())

    for src, i in by_source.items():
        for kind in ("input_mean", "input_scale", "output_mean", "output_scale"):
            plan[f"mean_scale.{kind}_{src}"] = (kind, i)
        plan[f"layer_enc.{src}.enc.0.weight"] = ("encoder.weight", i)
        batch_norm(f"layer_enc.{src}.enc.1", "encoder_bn", i, hidden)
        for k in model.lstms[i].state_dict():
            plan[f"layer_lstm.{src}.{k}"] = (f"lstms.{i}.{k}", ())
        plan[f"layer_dec.{src}.dec.0.weight"] = ("decoder1.weight", i)
        batch_norm(f"layer_dec.{src}.dec.1", "decoder1_bn", i, hidden)
        plan[f"layer_dec.{src}.dec.3.weight"] = ("decoder2.weight", i)
        batch_norm(f"layer_dec.{src}.dec.4", "decoder2_bn", i, out_features)
    return plan


def _check_keys(
    state: Mapping[str, Any], expected: dict[str, tuple[int, ...]], arch: dict[str, Any], name: str
) -> None:
    """Raise :class:`CheckpointError` listing every missing, unexpected and mis-shaped key of ``state``."""
    shapes = dict(expected)
    shapes.update({k: (arch["n_fft"],) for k in _WINDOW_KEYS if k in state})
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in shapes]
    misshaped = []
    for k, v in state.items():
        if k not in shapes:
            continue
        if not isinstance(v, Tensor):
            misshaped.append(f"{k} (a {type(v).__name__}, not a tensor)")
        elif tuple(v.shape) != shapes[k]:
            misshaped.append(f"{k} {tuple(v.shape)} (expected {shapes[k]})")
    if missing or unexpected or misshaped:
        parts = [
            f"{len(keys)} {label}: {_listing(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if keys
        ]
        raise CheckpointError(f"{name}: does not match X-UMX {arch}: " + "; ".join(parts))


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … and {len(keys) - limit} more" if len(keys) > limit else "")
