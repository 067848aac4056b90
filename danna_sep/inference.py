"""Models for inference: their I/O contract (:class:`ModelInfo`), and loading any model file for it.

The contract (what ``danna-sep`` and the released Danna-Sep files rely on), sources in the order drums, bass,
other, vocals:

* spectral models (X_UMX, UNetAttn): linear magnitude ``(batch, 2, 2049, frames)`` float32 →
  non-negative masks ``(batch, 4, 2, 2049, frames)``;
* waveform models (DemucsSplit): waveform ``(batch, 2, samples)`` at 44.1 kHz → stems
  ``(batch, 4, 2, samples')`` with ``samples' ≤ samples``, aligned at the start.

An exported file carries a :class:`ModelInfo` as JSON under :data:`METADATA_KEY`: in a TorchScript archive as an
extra file (``torch.jit.save(..., _extra_files=...)``), in an ONNX model as a ``metadata_props`` entry. Files
without it (the released ``xumx_mwf.pth``, ``unet_attention.pth``, ``demucs_4_decoders.pth``, ``xumx.onnx``) still
load: their role, hence their domain, is known from the file name (:data:`danna_sep.blend.MODEL_FILES`) and the
rest takes the original values.

:func:`load_model` opens any of: a TorchScript file, an ONNX file (through onnxruntime), or a training checkpoint
(``{"model": state_dict, "config": {"arch": ...}}``, rebuilt eagerly), and returns a :class:`LoadedModel` that
is called the same way whatever the format.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import HOP_LENGTH, N_FFT, SAMPLE_RATE, SOURCES, PathLike
from .checkpoints import MODEL_FILES, match_state_dict, read_checkpoint, strip_wrapper_prefixes
from .errors import CheckpointError, ConfigError
from .models.fuse import fold_batchnorm

METADATA_KEY = "danna_sep.json"
"""Name of the metadata entry in exported files."""

FORMAT_VERSION = 1

# registry name → checkpoint role (the released file names are per role)
ROLE_OF_TYPE = {"X_UMX": "xumx", "UNetAttn": "unet", "DemucsSplit": "demucs"}
# domain of each role, for files without metadata
DOMAIN_OF_ROLE = {"xumx": "spectral", "unet": "spectral", "demucs": "waveform"}
# file names the original system used at competition time, also recognised
_LEGACY_NAMES = {"xumx_mwf_v4.pth": "xumx", "unet_test.pth": "unet", "demucs.pth": "demucs"}

# samples of silence the original tool (danna-sep 1.0.2) put before the track for Demucs: its released weights
# have only ever seen the track at this position of their stride grid
ORIGINAL_DEMUCS_LEAD = 22050
ORIGINAL_DEMUCS_GRID = 2048  # 4**6 samples at 88.2 kHz


@dataclass(frozen=True)
class ModelInfo:
    """What the separator needs to know about a model besides its weights.

    ``frame_multiple``: spectral models whose frames are pooled (the U-Net: ``2**levels``) work best on segments
    that are multiples of it and start on such multiples. ``fixed_length``: the only input length (samples) a
    model accepts, e.g. a waveform model exported to ONNX, whose graph freezes its length arithmetic.
    ``itemwise_batches``: the model's batched CPU inference runs one item at a time but where batching is free
    (DemucsSplit's BiLSTM), so the separator may hand it several segments per call without multiplying its
    memory; false for files from elsewhere or older exports, which get one segment per call.
    ``grid``: a waveform model's output depends on where the signal sits modulo this many samples (its total
    stride); ``placement``: where the track's first sample should sit on that grid. The separator starts every
    segment's input on a sample ``≡ −placement (mod grid)``, so every sample is seen at the same grid phase in every
    segment (and, for the released Demucs, at the phase the original tool used).
    """

    domain: str  # "spectral" or "waveform"
    arch: dict | None = None  # {"type", "args"}; None for the released files
    sources: tuple = SOURCES
    sample_rate: int = SAMPLE_RATE
    channels: int = 2
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    frame_multiple: int = 1
    fixed_length: int | None = None
    itemwise_batches: bool = False
    grid: int = 1
    placement: int = 0
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # e.g. trained epochs, source checkpoint name

    def __post_init__(self) -> None:
        if self.domain not in ("spectral", "waveform"):
            raise CheckpointError(f"model metadata: domain must be 'spectral' or 'waveform', got {self.domain!r}")
        if tuple(self.sources) != tuple(SOURCES):
            raise CheckpointError(f"model metadata: sources must be {list(SOURCES)}, got {list(self.sources)}")
        if (
            self.sample_rate <= 0
            or self.channels < 1
            or self.n_fft < 2
            or self.hop_length < 1
            or self.frame_multiple < 1
            or (self.fixed_length is not None and self.fixed_length < 1)
            or self.grid < 1
            or self.placement < 0
        ):
            raise CheckpointError(f"model metadata: invalid values {self.to_dict()}")

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def role(self) -> str | None:
        return ROLE_OF_TYPE.get(self.arch["type"]) if self.arch else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = list(self.sources)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, name: str = "model") -> ModelInfo:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            data["sources"] = tuple(data.get("sources", SOURCES))
            version = int(data.get("format_version", FORMAT_VERSION))
            if version > FORMAT_VERSION:
                raise CheckpointError(
                    f"{name}: metadata format {version} is newer than this danna-sep understands "
                    f"({FORMAT_VERSION}); upgrade danna-sep"
                )
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{name}: unreadable {METADATA_KEY} metadata ({exc})") from None

    @classmethod
    def for_role(cls, role: str) -> ModelInfo:
        """Defaults for a released file without metadata (the original system's values)."""
        if role == "demucs":
            return cls(domain="waveform", grid=ORIGINAL_DEMUCS_GRID, placement=ORIGINAL_DEMUCS_LEAD)
        return cls(domain=DOMAIN_OF_ROLE[role], frame_multiple=64 if role == "unet" else 1)

    @classmethod
    def from_model(cls, model: nn.Module, config: Mapping[str, Any] | None = None) -> ModelInfo:
        """Metadata of an eager model built from ``config`` (a training config or just ``{"arch": ...}``)."""
        config = dict(config or {})
        domain = getattr(model, "domain", None)
        if domain not in ("spectral", "waveform"):
            raise CheckpointError(f"{type(model).__name__} has no 'domain' attribute ('spectral' or 'waveform')")
        arch = config.get("arch")
        args = dict((arch or {}).get("args") or {})
        trainer = config.get("trainer") or {}
        loss_args = (config.get("loss") or {}).get("args") or {}
        n_fft = int(args.get("n_fft") or trainer.get("n_fft") or loss_args.get("n_fft") or N_FFT)
        hop = int(args.get("hop_length") or trainer.get("hop_length") or loss_args.get("hop_length") or n_fft // 4)
        channels = int(
            getattr(model, "nb_channels", None) or args.get("nb_channels") or args.get("audio_channels") or 2
        )
        return cls(
            domain=domain,
            arch=dict(arch) if arch else {"type": type(model).__name__, "args": {}},
            channels=channels,
            n_fft=n_fft,
            hop_length=hop,
            frame_multiple=int(getattr(model, "multiple", 1)) if domain == "spectral" else 1,
            itemwise_batches=bool(getattr(model, "itemwise_batches", False)),
            grid=int(getattr(model, "grid", 1)) if domain == "waveform" else 1,
            # imported released weights keep the original tool's placement
            placement=ORIGINAL_DEMUCS_LEAD if domain == "waveform" and getattr(model, "legacy", False) else 0,
        )


def role_from_filename(path: PathLike) -> str | None:
    """The checkpoint role (``xumx``, ``unet``, ``demucs``) of a released file name, or None."""
    name = Path(path).name
    for role, names in MODEL_FILES.items():
        if name in names:
            return role
    return _LEGACY_NAMES.get(name)


# ------------------------------------------------------------------------------------------------ checkpoints


def model_from_checkpoint(path: PathLike, config: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of a training checkpoint, strictly loaded and in eval mode.

    ``config`` (e.g. the JSON config passed to ``jit_convert.py``) overrides the checkpoint's own config; one of
    them must hold ``arch``. Returns ``(model, config used)``.
    """
    from .models import build_model

    ckpt = read_checkpoint(path)
    cfg = dict(config) if config is not None else dict(ckpt.get("config") or {})
    if not isinstance(cfg.get("arch"), Mapping):
        raise CheckpointError(f"{path}: no config with an 'arch' entry in the checkpoint; pass the training config")
    model = build_model(cfg["arch"])
    state = strip_wrapper_prefixes(ckpt["model"])
    report = match_state_dict(model, state)
    if not report.complete:
        raise CheckpointError(
            f"{path}: weights do not match {cfg['arch'].get('type')} {cfg['arch'].get('args', {})} "
            f"({report.describe()})"
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    trainer = ckpt.get("trainer")
    if not isinstance(trainer, Mapping):
        trainer = {}
    cfg = {**cfg, "_epochs": trainer.get("epoch")}
    return model, cfg


# ------------------------------------------------------------------------------------------------contract


def example_input(info: ModelInfo, length: int, seed: int = 0) -> Tensor:
    """A realistic random model input: noise → STFT magnitude ``(1, C, bins, length frames)`` for spectral models,
    noise ``(1, C, length samples)`` for waveform models."""
    g = torch.Generator().manual_seed(seed)
    if info.domain == "waveform":
        return 0.1 * torch.randn(1, info.channels, length, generator=g)
    from .spectral import STFT

    wav = 0.1 * torch.randn(1, info.channels, (length - 1) * info.hop_length + 1, generator=g)  # → `length` frames
    return STFT(info.n_fft, info.hop_length)(wav).abs()


def check_contract(output: Tensor, inp: Tensor, info: ModelInfo, name: str = "model") -> None:
    """Raise :class:`CheckpointError` unless ``output`` has the contract's shape for ``inp``."""
    if info.domain == "spectral":
        expected = (inp.shape[0], len(SOURCES), *inp.shape[1:])
        ok = tuple(output.shape) == expected
    else:
        expected = (inp.shape[0], len(SOURCES), inp.shape[1], f"≤{inp.shape[-1]}")
        ok = output.dim() == 4 and tuple(output.shape[:3]) == expected[:3] and output.shape[-1] <= inp.shape[-1]
    if not ok:
        raise CheckpointError(
            f"{name}: for input {tuple(inp.shape)} the output is {tuple(output.shape)}, the contract needs {expected}"
        )


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """TorchScript is the released files' format (and the contract); torch ≥ 2.10 warns that it is deprecated
    (a DeprecationWarning in 2.13, a FutureWarning, which Python shows to users, for ``torch.jit.load`` in 2.14)."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, message=r".*torch\.jit")
        yield


def max_relative_error(a: Tensor, b: Tensor) -> float:
    """``max|a − b| / max|b|`` (0 when both are zero)."""
    scale = b.abs().max().item()
    diff = (a.double() - b.double()).abs().max().item()
    return diff / scale if scale > 0 else diff


# --------------------------------------------------------------------------------------------------- precision

PRECISIONS = ("fp32", "bf16")
"""Inference precisions (:meth:`LoadedModel.with_precision`, ``Separator(precision=...)``, ``danna-sep
--precision``). ``fp32``: float32, exact, the default. ``bf16``: lossy, opt-in, for the models of
:data:`BF16_ROLES`: their calls run under ``torch.autocast`` to bfloat16 (matrix products, LSTMs and convolutions
in bfloat16, outputs back to float32), faster on CPUs that multiply bfloat16 natively (AVX512-BF16 / AMX).
Files run by onnxruntime (``.onnx``) stay float32."""

BF16_ROLES = ("xumx", "unet")
"""The models ``bf16`` applies to on CPU. ``benchmarks/bench_levers.py`` (2 cores of an AMX Xeon, idle, full-size
models, calibrated random weights, music-like input, SDR per source against fp32): X-UMX 1.68× faster at
45.8 – 46.4 dB, the U-Net 1.65× at 28 – 34 dB (drums, bass 28, other 31, vocals 34). Demucs stays float32 (34 – 36 dB
and no faster: its step-by-step BiLSTM gives way to ``nn.LSTM`` under autocast)."""

BF16_SDR_DB = {"xumx": 45.0, "unet": 27.0}
"""The documented floor (dB) of each ``bf16`` model's SDR per source against its float32 output (the full-size
measurements above; tested on the tiny models in ``tests/test_levers.py``)."""


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a :class:`ConfigError` naming them."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What a model call of ``precision`` on ``device`` runs under (see :data:`PRECISIONS`)."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    # autocast, not oneDNN's process-wide torch.backends.mkldnn.fp32_precision = "bf16": autocast is per thread,
    # so a float32 model running beside it (Separator(parallel=True)) stays float32
    return torch.autocast(device.type, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------- loading


class LoadedModel:
    """A model ready for inference, whatever its file format: ``model(x) -> y`` under the I/O contract.

    ``kind`` is ``"torchscript"``, ``"onnx"``, ``"checkpoint"`` (an eager model rebuilt from a training
    checkpoint) or ``"module"`` (wrapping an in-memory ``nn.Module``). Inputs may live on any device; outputs
    are on :attr:`device`, float32. ``precision``: what the calls compute in (:data:`PRECISIONS`;
    :meth:`with_precision`).
    """

    precision = "fp32"

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        info: ModelInfo,
        kind: str,
        path: Path | None,
        device: torch.device,
        module: nn.Module | None = None,
    ):
        self._fn = fn
        self.info = info
        self.kind = kind
        self.path = path
        self.device = device
        self.module = module

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        info: ModelInfo | None = None,
        device: str | torch.device = "cpu",
        config: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        """Wrap an eager (or scripted) module; ``info`` defaults to :meth:`ModelInfo.from_model`."""
        device = torch.device(device)
        info = info or ModelInfo.from_model(module, config)
        module = fold_batchnorm(module.to(device).eval())
        return cls(module, info, "module", None, device, module)

    @property
    def name(self) -> str:
        return self.path.name if self.path else (self.info.arch or {}).get("type", "model")

    def with_precision(self, precision: str, role: str | None = None) -> LoadedModel:
        """This model computing in ``precision`` (:data:`PRECISIONS`; lossy but ``fp32``), sharing its weights.

        On CPU ``bf16`` applies only to the roles in :data:`BF16_ROLES` (``role``, else the metadata's), where it
        is faster; the others stay ``fp32``. Returns the model itself when nothing changes, and for files that
        onnxruntime runs (float32 only)."""
        check_precision(precision)
        role = role or self.info.role
        if precision == "bf16" and self.device.type == "cpu" and role not in BF16_ROLES:
            precision = "fp32"
        if precision == self.precision or self.kind == "onnx":
            return self
        other = copy.copy(self)
        other.precision = precision
        return other

    def __call__(self, x: Tensor) -> Tensor:
        with torch.inference_mode(), precision_context(self.precision, self.device):
            # contiguous: the released TorchScript models reshape their input with .view, which fails on a
            # transposed layout such as an STFT's magnitude
            out = self._fn(x.to(self.device, torch.float32).contiguous())
        return out if out.dtype == torch.float32 else out.float()

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, kind={self.kind}, domain={self.info.domain}, device={self.device})"


def _is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_model(path: PathLike, role: str | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Open an exported model (TorchScript / ONNX) or a training checkpoint for inference on ``device``.

    ``role`` (``xumx``, ``unet``, ``demucs``) tells the domain of a file without metadata; by default it comes
    from the file name (the released names).
    """
    path = Path(path).expanduser()
    device = torch.device(device)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    role = role or role_from_filename(path)
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, role, device)
    if _is_torchscript_archive(path):
        return _load_torchscript(path, role, device)
    model, cfg = model_from_checkpoint(path)
    info = ModelInfo.from_model(model, cfg)
    model = fold_batchnorm(model.to(device))
    return LoadedModel(model, info, "checkpoint", path, device, model)


def _fallback_info(path: Path, role: str | None) -> ModelInfo:
    if role not in DOMAIN_OF_ROLE:
        raise CheckpointError(
            f"{path}: no {METADATA_KEY} metadata and the file name does not tell which model it is; name it as a "
            f"released file ({', '.join(n for names in MODEL_FILES.values() for n in names)}) or re-export it "
            "with `danna export`"
        )
    return ModelInfo.for_role(role)


def _load_torchscript(path: Path, role: str | None, device: torch.device) -> LoadedModel:
    extra = {METADATA_KEY: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: cannot load the TorchScript model "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
        ) from None
    text = extra[METADATA_KEY]
    if isinstance(text, bytes):
        text = text.decode()
    info = ModelInfo.from_json(text, str(path)) if text else _fallback_info(path, role)
    module.eval()
    return LoadedModel(module, info, "torchscript", path, device, module)


def _load_onnx(path: Path, role: str | None, device: torch.device) -> LoadedModel:
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        raise CheckpointError(f"{path}: ONNX models need onnxruntime (pip install 'danna-sep[onnx]')") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 4  # failures are raised as CheckpointError instead
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device.type == "mps" and "CoreMLExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CoreMLExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot load the ONNX model ({str(exc).strip().splitlines()[0]})") from None
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    info = ModelInfo.from_json(meta, str(path)) if meta else _fallback_info(path, role)
    input_name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        if info.fixed_length is not None and x.shape[-1] != info.fixed_length:
            raise CheckpointError(f"{path}: takes exactly {info.fixed_length} samples, got {x.shape[-1]}")
        try:
            out = session.run(None, {input_name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        except Exception as exc:  # onnxruntime's own error types
            raise CheckpointError(
                f"{path}: onnxruntime failed for input {tuple(x.shape)} ({str(exc).strip().splitlines()[0]})"
            ) from None
        return torch.from_numpy(out[0]).to(device)

    return LoadedModel(run, info, "onnx", path, device)
