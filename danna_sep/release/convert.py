"""The released weights inside danna-sep's own models: map, verify, save.

The original release ships TorchScript archives whose state dicts use the original's module names (listed in
``docs/released-models.md``); not one key of X-UMX or the U-Net and only 24 of Demucs' 74 coincide with ours. Each
converter below maps a released state dict onto our eager model, inferring the hyper-parameters from the shapes
(and, where shapes cannot tell — the U-Net's attention heads and bins, Demucs' stride — from the archive's own
attributes, else the original's values)::

    released file ──torch.jit.load──▶ state dict ──convert──▶ our model (legacy computation where the original
                                                              differed) ──output equal to the archive's?──▶
                                                              <role>_imported.pt  {"model", "config", "imported_from"}

X-UMX maps exactly (our per-source matmuls are its grouped 1×1 convolutions). The U-Net and Demucs get
``"legacy": true``: the weights were trained with the original's geometry (the U-Net's lost bins and frames, its
unmasked attention; Demucs without valid-length padding), so they run with it. The saved checkpoint is an ordinary
danna-sep checkpoint: it runs through our code (GPU, half precision, batched segments, our ONNX export) and can be
fine-tuned (``danna train CONFIG --weights unet_imported.pt --set arch.args.legacy=true ...``).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import SOURCES
from ..errors import CheckpointError
from .registry import Registry, load_registry

TOLERANCE = 1e-4  # max relative difference between our model and the released archive on the test signal
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

State = dict[str, Tensor]
Arch = dict[str, object]


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_file` did: the released ``source``, the checkpoint written (or kept), the architecture,
    its parameter count and the largest relative difference from the released archive's output."""

    role: str
    source: Path
    output: Path
    arch: Arch
    params: int
    error: float
    written: bool

    def describe(self) -> str:
        action = "imported" if self.written else "up to date"
        return (
            f"{self.output.name}: {action} from {self.source.name} ({self.arch['type']}, {self.params:,} parameters, "
            f"output equal to the release's within {self.error:.1e} relative)"
        )


# ------------------------------------------------------------------------------------------------- reading


def read_archive(path: Path) -> torch.jit.ScriptModule:
    """The released TorchScript module at ``path`` (CPU, eval mode)."""
    from ..inference import _quiet_jit

    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises many kinds for a file that is not an archive
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({_first_line(exc)})") from None
    return module.eval()


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, else its type's name (some torch errors have an empty message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _attribute(module: nn.Module | None, path: str, default: int) -> int:
    """An integer attribute of the archive (``"attn.0.n_heads"``), or ``default`` where it has none."""
    obj: object = module
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except (AttributeError, RuntimeError):
            return default
    return int(obj) if isinstance(obj, (int, bool)) else default


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    """How many distinct integers ``{n}`` make ``pattern`` match a key of ``state``."""
    regex = re.compile("^" + re.escape(pattern).replace(r"\{n\}", r"(\d+)"))
    return len({m.group(1) for key in state for m in [regex.match(key)] if m})


def _take(state: Mapping[str, Tensor], key: str, name: str) -> Tensor:
    if key not in state:
        raise CheckpointError(f"{name}: no {key!r} in the released state dict: not a file of the original release?")
    return state[key]


# ------------------------------------------------------------------------------------------------ converters


def xumx_from_release(
    state: Mapping[str, Tensor], archive: nn.Module | None = None, name: str = "xumx"
) -> tuple[Arch, State]:
    """The original ``X_UMX`` (grouped 1×1 convolutions, per-source LSTMs named by source) → our ``X_UMX``."""
    w1 = _take(state, "affine1.0.weight", name)  # (sources·hidden, channels·max_bins, 1), 4 groups
    sources = len(SOURCES)
    hidden = w1.shape[0] // sources
    max_bins = _take(state, "input_means", name).shape[0] // sources
    bins = _take(state, "output_means", name).shape[0] // sources
    channels = w1.shape[1] // max_bins
    layers = _count(state, "bass_lstm.weight_ih_l{n}")
    arch: Arch = {
        "type": "X_UMX",
        "args": {
            "n_fft": 2 * (bins - 1),
            "hidden_channels": hidden,
            "max_bins": max_bins,
            "nb_channels": channels,
            "nb_layers": layers,
        },
    }
    out: State = {
        "input_mean": state["input_means"].reshape(sources, max_bins),
        "input_scale": _take(state, "input_scale", name).reshape(sources, max_bins),
        "output_mean": state["output_means"].reshape(sources, bins),
        "output_scale": _take(state, "output_scale", name).reshape(sources, bins),
        "encoder.weight": w1.reshape(sources, hidden, channels * max_bins),
        "decoder1.weight": _take(state, "affine2.0.weight", name).reshape(sources, hidden, 2 * hidden),
        "decoder2.weight": _take(state, "affine2.3.weight", name).reshape(sources, channels * bins, hidden),
    }
    for theirs, ours in (("affine1.1", "encoder_bn"), ("affine2.1", "decoder1_bn"), ("affine2.4", "decoder2_bn")):
        out.update({f"{ours}.{k}": _take(state, f"{theirs}.{k}", name) for k in _BN})
    for i, source in enumerate(SOURCES):
        prefix = f"{source}_lstm."
        out.update({f"lstms.{i}.{k[len(prefix) :]}": v for k, v in state.items() if k.startswith(prefix)})
    return arch, out


def _d3_keys(theirs: str, ours: str, state: Mapping[str, Tensor]) -> dict[str, str]:
    """Key map of one D3 block.

    ``<theirs>.d2_layers.m.{conv_layers.j, bn_layers.j.0}`` → ``<ours>.blocks.m.layers.j.{conv, norm}``.
    """
    keys: dict[str, str] = {}
    for m in range(_count(state, f"{theirs}.d2_layers.{{n}}.")):
        for j in range(_count(state, f"{theirs}.d2_layers.{m}.conv_layers.{{n}}.")):
            keys[f"{theirs}.d2_layers.{m}.conv_layers.{j}.weight"] = f"{ours}.blocks.{m}.layers.{j}.conv.weight"
            for k in _BN:
                keys[f"{theirs}.d2_layers.{m}.bn_layers.{j}.0.{k}"] = f"{ours}.blocks.{m}.layers.{j}.norm.{k}"
    return keys


def unet_from_release(
    state: Mapping[str, Tensor], archive: nn.Module | None = None, name: str = "unet"
) -> tuple[Arch, State]:
    """The original ``UNetAttn`` → our ``UNetAttn(legacy=True)``."""
    levels = _count(state, "down_convs.{n}.")
    first = "down_convs.0.0.d2_layers.0.conv_layers"
    depth0 = _count(state, first + ".{n}.")
    k = _take(state, f"{first}.{depth0 - 1}.weight", name).shape[0]
    for i in range(levels):  # the original's layer rule; our constructor derives the same
        found = _count(state, f"down_convs.{i}.0.d2_layers.0.conv_layers.{{n}}.")
        if found != max(2, levels - 1 - i) or _count(state, f"down_convs.{i}.0.d2_layers.{{n}}.") != 2:
            raise CheckpointError(
                f"{name}: encoder level {i} has {found} D2 layers, not the original's "
                f"{max(2, levels - 1 - i)}: not the original U-Net"
            )
    attn = [i for i in range(_count(state, "attn.{n}.")) if f"attn.{i}.qkv_conv.weight" in state]
    if not attn:
        raise CheckpointError(f"{name}: no attention layers (attn.*.qkv_conv): not the original U-Net")
    first_attn = f"attn.{attn[0]}"
    args = {
        "max_bins": _attribute(archive, "max_bins", 1487),
        "nb_channels": _take(state, f"{first}.0.weight", name).shape[1],
        "k": k,
        "levels": levels,
        "d_model": state[f"{first_attn}.out_conv.weight"].shape[1],
        "n_heads": _attribute(archive, f"{first_attn}.n_heads", 8),
        "query_shape": _attribute(archive, f"{first_attn}.query_shape", 2),
        "memory_flange": _attribute(archive, f"{first_attn}.memory_flange", 3),
        "attn_channels": state[f"{first_attn}.out_conv.weight"].shape[0],
        "attn_layers": len(attn),
        "rel_pos_bias": False,
        "legacy": True,
    }
    keys: dict[str, str] = {}
    for i in range(levels):
        keys.update(_d3_keys(f"down_convs.{i}.0", f"encoder.{i}", state))
    for j, i in enumerate(attn):  # attn = [MHA, BN, ReLU] × layers → attention.j = [LocalAttention2d, BN, ReLU]
        keys.update(
            {
                f"attn.{i}.qkv_conv.weight": f"attention.{j}.0.qkv.weight",
                f"attn.{i}.qkv_conv.bias": f"attention.{j}.0.qkv.bias",
                f"attn.{i}.out_conv.weight": f"attention.{j}.0.out_conv.weight",
            }
        )
        keys.update({f"attn.{i + 1}.{b}": f"attention.{j}.1.{b}" for b in _BN})
    for j in range(_count(state, "up_convs.{n}.")):
        keys.update(_d3_keys(f"up_convs.{j}.0", f"decoder.{j}.0", state))
        keys[f"up_convs.{j}.1.weight"] = f"decoder.{j}.1.weight"
        keys.update({f"up_convs.{j}.2.{b}": f"decoder.{j}.2.{b}" for b in _BN})
    keys["end.0.weight"] = "head.0.weight"
    keys.update({f"end.1.{b}": f"head.1.{b}" for b in _BN})
    keys.update({"end.3.weight": "head.3.weight", "end.3.bias": "head.3.bias"})
    return {"type": "UNetAttn", "args": args}, _remap(state, keys, name)


def demucs_from_release(
    state: Mapping[str, Tensor], archive: nn.Module | None = None, name: str = "demucs"
) -> tuple[Arch, State]:
    """The original ``DemucsSplit`` → our ``DemucsSplit(legacy=True)``."""
    first = _take(state, "encoder.0.0.weight", name)  # (channels, audio_channels, kernel)
    depth = _count(state, "encoder.{n}.0.weight")
    widths = [state[f"encoder.{i}.0.weight"].shape[0] for i in range(depth)]
    growth = widths[1] / widths[0] if depth > 1 else 2.0
    top_bias = _take(state, f"decoder.{depth - 1}.0.bias", name)  # sources · audio_channels
    args = {
        "sources": top_bias.shape[0] // first.shape[1],
        "audio_channels": first.shape[1],
        "channels": widths[0],
        "depth": depth,
        "kernel_size": first.shape[2],
        "stride": _attribute(archive, "stride", 4),
        "growth": growth,
        "lstm_layers": _count(state, "lstm.weight_hh_l{n}"),
        "resample": "up_sample.kernel" in state,
        "legacy": True,
    }
    if args["sources"] != len(SOURCES):
        raise CheckpointError(f"{name}: has {args['sources']} sources, danna-sep needs {len(SOURCES)}")
    keys = {k: k for k in state if k.startswith("encoder.")}
    keys.update({k: "lstm.lstm." + k[len("lstm.") :] for k in state if k.startswith("lstm.")})
    keys.update({k: "lstm.linear." + k[len("lstm_linear.") :] for k in state if k.startswith("lstm_linear.")})
    for level in range(depth):
        keys.update(
            {
                f"dec_pre_convs.{level}.weight": f"decoder.{level}.pre_conv.weight",
                f"dec_pre_convs.{level}.bias": f"decoder.{level}.pre_conv.bias",
                f"convs_1x1.{level}.weight": f"decoder.{level}.skip_conv.weight",
                f"decoder.{level}.0.weight": f"decoder.{level}.deconv.weight",
                f"decoder.{level}.0.bias": f"decoder.{level}.deconv.bias",
            }
        )
    if args["resample"]:
        _check_resampling_filters(state, name)
    return {"type": "DemucsSplit", "args": args}, _remap(state, keys, name, ignore=("up_sample.", "down_sample."))


def _check_resampling_filters(state: Mapping[str, Tensor], name: str) -> None:
    """Our models rebuild julius' ×2 / ÷2 filters; the archive's copies must be those filters."""
    import julius

    for key, (old, new) in (("up_sample.kernel", (1, 2)), ("down_sample.kernel", (2, 1))):
        ours = julius.ResampleFrac(old, new).kernel
        assert isinstance(ours, Tensor)
        theirs = state[key]
        if theirs.shape != ours.shape or not torch.allclose(theirs.float(), ours.float(), atol=1e-6):
            raise CheckpointError(
                f"{name}: its {key} is not julius' ResampleFrac({old}, {new}) filter "
                f"(shape {tuple(theirs.shape)} vs {tuple(ours.shape)}); cannot import it"
            )


def _remap(state: Mapping[str, Tensor], keys: Mapping[str, str], name: str, ignore: Sequence[str] = ()) -> State:
    missing = [k for k in keys if k not in state]
    unused = [k for k in state if k not in keys and not k.startswith(tuple(ignore))]
    if missing or unused:
        parts = [
            f"{len(v)} {label}: {', '.join(v[:6])}{' …' if len(v) > 6 else ''}"
            for label, v in (("missing", missing), ("unexpected", unused))
            if v
        ]
        raise CheckpointError(f"{name}: not the original release's layout ({'; '.join(parts)})")
    return {ours: state[theirs] for theirs, ours in keys.items()}


CONVERTERS: dict[str, Callable[..., tuple[Arch, State]]] = {
    "xumx": xumx_from_release,
    "unet": unet_from_release,
    "demucs": demucs_from_release,
}


def build_imported(role: str, archive: nn.Module, name: str = "model") -> tuple[Arch, nn.Module]:
    """Our eager model (eval mode) holding the weights of the released ``archive`` of ``role``."""
    from ..models import build_model

    arch, state = CONVERTERS[role](archive.state_dict(), archive, name)
    model = build_model(arch)
    own = model.state_dict()
    shaped = [
        f"{k} {tuple(v.shape)} (ours {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if shaped or missing or unexpected:
        parts = [
            f"{label} {', '.join(v[:4])}{' …' if len(v) > 4 else ''}"
            for label, v in (("mis-shaped", shaped), ("missing", missing), ("unexpected", unexpected))
            if v
        ]
        raise CheckpointError(f"{name}: the weights do not fit {arch['type']} {arch['args']}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return arch, model.eval()


# ------------------------------------------------------------------------------------------------ verifying


def probe_signal(role: str, seed: int = 0) -> Tensor:
    """The input on which the import is compared with the archive: 3 s of a chord with noise, as the model sees
    it (magnitude ``(1, 2, 2049, frames)`` for spectral roles, waveform ``(1, 2, samples)`` for Demucs)."""
    from .. import SAMPLE_RATE
    from ..spectral import STFT

    g = torch.Generator().manual_seed(seed)
    t = torch.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tone = sum(torch.sin(2 * torch.pi * f * t) for f in (110.0, 220.0 * 1.26, 440.0 * 1.5)) / 6
    wav = (tone + 0.05 * torch.randn(2, t.numel(), generator=g))[None].float()
    if role == "demucs":
        return wav
    return STFT()(wav[..., : 127 * 1024]).abs().contiguous()  # 128 frames: two of the U-Net's 64-frame grid


def compare(ours: nn.Module, reference: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """Largest relative difference ``max|ours − reference| / max|reference|`` on ``x``."""
    from ..inference import max_relative_error

    with torch.inference_mode():
        want = reference(x)
        got = ours(x)
    if got.shape != want.shape:
        raise CheckpointError(f"output {tuple(got.shape)} differs from the release's {tuple(want.shape)}")
    return max_relative_error(got, want)


# ----------------------------------------------------------------------------------------------- importing


def import_file(
    source: Path, role: str, output: Path, *, force: bool = False, onnx: Path | None = None
) -> ImportReport:
    """Import the released archive ``source`` of ``role`` into our model and save it as ``output``.

    The output must equal the archive's (and ``onnx``'s, if given: the same model as ONNX) within
    :data:`TOLERANCE`, else nothing is written. An ``output`` newer than ``source`` is kept unless ``force``.
    """
    from ..checkpoints import atomic_write

    if not force:
        kept = _up_to_date(source, role, output)
        if kept is not None:
            return kept
    archive = read_archive(source)
    arch, model = build_imported(role, archive, str(source))
    x = probe_signal(role)
    errors = {}
    if onnx is not None:  # onnxruntime runs float32 only
        from ..inference import load_model

        errors[onnx.name] = compare(model, load_model(onnx, role=role), x)
    errors[source.name] = compare(model, archive, x)
    if not errors[source.name] <= TOLERANCE:
        # deep nets with random-looking weights amplify float32 rounding (the full U-Net's own float32 output is
        # ~3e-4 from its float64 output): compare the mapping itself, in float64
        errors[source.name] = compare(model.double(), archive.double(), x.double())
        model.float()  # exact: the weights came from float32
    worst = max(errors.values())
    if not worst <= TOLERANCE:  # also catches NaN
        detail = ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        raise CheckpointError(
            f"{source}: our {arch['type']} does not reproduce the released model "
            f"(relative difference {detail} > {TOLERANCE:g}); nothing written"
        )
    params = sum(p.numel() for p in model.parameters())
    checkpoint = {
        "model": model.state_dict(),
        "config": {"arch": arch},
        "imported_from": {
            "file": source.name,
            "size": source.stat().st_size,
            "params": params,
            "max_relative_error": worst,
            "compared_with": sorted(errors),
        },
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(output, buffer.getvalue())
    return ImportReport(role, source, output, arch, params, worst, written=True)


def _up_to_date(source: Path, role: str, output: Path) -> ImportReport | None:
    """The report of an existing import of ``source`` at ``output`` that is newer than it and was made from a file
    of its size; None where there is none, or ``output`` is unreadable or not an import (then it is redone)."""
    try:
        if not output.is_file() or output.stat().st_mtime < source.stat().st_mtime:
            return None
        ckpt = torch.load(output, map_location="cpu", weights_only=True, mmap=True)  # mapped: only the header is read
        info, arch = ckpt["imported_from"], ckpt["config"]["arch"]
        if info["file"] != source.name or info["size"] != source.stat().st_size or not isinstance(arch, dict):
            return None
        return ImportReport(
            role, source, output, arch, int(info["params"]), float(info["max_relative_error"]), written=False
        )
    except Exception:  # a half-copied, foreign or older file: import again
        return None


def _is_danna_export(path: Path) -> bool:
    """A TorchScript file written by ``danna export`` (it carries our metadata): not the original release."""
    import zipfile

    from ..inference import METADATA_KEY

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/extra/" + METADATA_KEY) for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def import_released(
    folder: os.PathLike,
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    quiet: bool = False,
    notify: Callable[[str], None] = print,
    registry: Registry | None = None,
) -> list[ImportReport]:
    """Import every importable released file present in ``folder`` (or only ``names``) into our models.

    Files that are danna-sep exports already (they carry metadata) are left alone. Returns one report per import.
    A file that cannot be imported raises :class:`CheckpointError` after the others were imported.
    """
    folder = Path(folder).expanduser()
    registry = registry or load_registry()
    wanted = None if names is None else set(names)
    reports, failures = [], []
    for entry in registry.files:
        if not entry.imported or entry.role not in CONVERTERS or (wanted is not None and entry.name not in wanted):
            continue
        source = folder / entry.name
        if not source.is_file() or _is_danna_export(source):
            continue
        onnx = next(
            (
                folder / e.name
                for e in registry.for_role(entry.role)
                if e.format == "onnx" and (folder / e.name).is_file()
            ),
            None,
        )
        if onnx is not None and not _onnxruntime_available():
            onnx = None
        try:
            report = import_file(source, entry.role, folder / entry.imported, force=force, onnx=onnx)
        except CheckpointError as exc:  # the other files are still imported
            failures.append(str(exc))
            continue
        if not quiet:
            notify(report.describe())
        reports.append(report)
    if failures:
        done = f" ({len(reports)} other(s) imported)" if reports else ""
        raise CheckpointError("; ".join(failures) + done)
    return reports


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None
