"""Export a model to TorchScript or ONNX under the I/O contract of :mod:`danna_sep.inference`, with its
:class:`~danna_sep.inference.ModelInfo` as metadata, and verify the export against the eager model.

TorchScript is kept for the original release's contract (``torch.jit`` is deprecated in current torch); ONNX is
the portable format. The metadata goes into a TorchScript archive as an extra file
(``torch.jit.save(..., _extra_files=...)``) and into an ONNX model as a ``metadata_props`` entry.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from . import SAMPLE_RATE, PathLike
from .checkpoints import MODEL_FILES, atomic_write, load_torch_file, read_checkpoint
from .errors import CheckpointError, ConfigError

# the inference side, re-exported (listed in __all__): this module was its home before danna_sep.inference
from .inference import (
    DOMAIN_OF_ROLE,
    FORMAT_VERSION,
    METADATA_KEY,
    ORIGINAL_DEMUCS_GRID,
    ORIGINAL_DEMUCS_LEAD,
    ROLE_OF_TYPE,
    LoadedModel,
    ModelInfo,
    _quiet_jit,
    check_contract,
    example_input,
    load_model,
    max_relative_error,
    model_from_checkpoint,
    role_from_filename,
)
from .models.fuse import fold_batchnorm

__all__ = [
    "DOMAIN_OF_ROLE",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "MODEL_FILES",
    "ONNX_OPSET",
    "ORIGINAL_DEMUCS_GRID",
    "ORIGINAL_DEMUCS_LEAD",
    "ROLE_OF_TYPE",
    "WAVEFORM_ONNX_LENGTH",
    "LoadedModel",
    "ModelInfo",
    "atomic_write",
    "check_contract",
    "example_input",
    "export_onnx",
    "export_torchscript",
    "load_model",
    "load_torch_file",
    "max_relative_error",
    "model_from_checkpoint",
    "read_checkpoint",
    "role_from_filename",
    "verify",
]

ONNX_OPSET = 17
WAVEFORM_ONNX_LENGTH = 10 * SAMPLE_RATE + 4096  # a 10 s Demucs segment and the separator's margin


# ------------------------------------------------------------------------------------------------------ export


def export_torchscript(model: nn.Module, path: PathLike, info: ModelInfo) -> torch.jit.ScriptModule:
    """Script ``model`` (eval mode) and save it with its metadata to ``path`` atomically."""
    model = fold_batchnorm(model.eval())
    try:
        with _quiet_jit():
            scripted = torch.jit.script(model)
    except Exception as exc:  # TorchScript frontend errors are long; the first line names the cause
        raise CheckpointError(f"cannot script {type(model).__name__}: {str(exc).strip().splitlines()[0]}") from None
    buffer = io.BytesIO()
    with _quiet_jit():
        torch.jit.save(scripted, buffer, _extra_files={METADATA_KEY: info.to_json()})
    atomic_write(path, buffer.getvalue())
    return scripted


def export_onnx(
    model: nn.Module, path: PathLike, info: ModelInfo, opset: int = ONNX_OPSET, fixed_length: int = WAVEFORM_ONNX_LENGTH
) -> ModelInfo:
    """Export ``model`` to ONNX (input ``input``, output ``output``) with metadata; returns the metadata written.

    Spectral models get dynamic batch and frame axes. Waveform models are exported for inputs of exactly
    ``fixed_length`` samples (recorded as :attr:`ModelInfo.fixed_length`; the separator feeds segments of that
    size): tracing freezes Demucs's valid-length arithmetic, so no other length would be right.
    """
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the 'onnx' package (pip install 'danna-sep[onnx]')") from None
    model = fold_batchnorm(model.eval())
    info = ModelInfo(**{**info.__dict__, "itemwise_batches": False})  # the traced graph batches as a whole
    if info.domain == "waveform":
        info = ModelInfo(**{**info.__dict__, "fixed_length": fixed_length})
        example = example_input(info, fixed_length)
        dynamic = {"input": {0: "batch"}, "output": {0: "batch"}}
    else:
        example = example_input(info, 96)
        dynamic = {"input": {0: "batch", 3: "frames"}, "output": {0: "batch", 4: "frames"}}
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        raw = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript-based exporter warns about every traced shape op
                torch.onnx.export(
                    model,
                    (example,),
                    str(raw),
                    dynamo=False,
                    input_names=["input"],
                    output_names=["output"],
                    opset_version=opset,
                    dynamic_axes=dynamic,
                )
        except Exception as exc:
            raise CheckpointError(
                f"ONNX export of {type(model).__name__} failed (an operator ONNX opset {opset} "
                f"cannot express?): {str(exc).strip().splitlines()[0]}"
            ) from None
        # a second, quieter input (of another length where the time axis is dynamic) catches frozen branches
        other = 0.1 * example_input(info, info.fixed_length or 77, seed=1)
        _check_onnx_runs(raw, model, (example, other))
        proto = onnx.load(str(raw))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, info.to_json()
        atomic_write(path, proto.SerializeToString())
    return info


def _check_onnx_runs(path: Path, model: nn.Module, inputs: Sequence[Tensor], tolerance: float = 1e-4) -> None:
    """The exported graph must reproduce the eager model on ``inputs``; a graph that does not (an operator the
    exporter translates wrongly, a Python branch the tracer froze) is never written."""
    try:
        import onnxruntime as ort
    except ImportError:  # nothing to check with; `danna export` verifies when it can
        return
    name = type(model).__name__
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its failure is reported below, in one line
    session = None
    for x in inputs:
        try:
            session = session or ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        except Exception as exc:
            raise CheckpointError(
                f"the ONNX export of {name} does not run in onnxruntime "
                f"({str(exc).strip().splitlines()[0][:300]}); use the TorchScript export"
            ) from None
        with torch.no_grad():
            want = model(x)
        if got.shape != want.shape or not max_relative_error(got, want) <= tolerance:
            raise CheckpointError(
                f"the ONNX export of {name} does not reproduce the model for input "
                f"{tuple(x.shape)}; use the TorchScript export"
            )


def verify(reference: nn.Module, exported: LoadedModel, lengths: Sequence[int], tolerance: float = 1e-5) -> float:
    """Compare ``exported`` with the eager ``reference`` on random inputs of each length (frames or samples).

    Returns the largest relative error; raises :class:`CheckpointError` above ``tolerance`` or on a shape mismatch.
    """
    worst = 0.0
    for i, length in enumerate(lengths):
        x = example_input(exported.info, length, seed=i)
        with torch.no_grad():
            want = reference(x)
        got = exported(x)
        if got.shape != want.shape:
            raise CheckpointError(
                f"{exported.path}: output {tuple(got.shape)} differs from the eager model's "
                f"{tuple(want.shape)} for length {length}"
            )
        err = max_relative_error(got, want)
        if not err <= tolerance:  # also catches NaN
            raise CheckpointError(
                f"{exported.path}: differs from the eager model by {err:.3g} (relative) for "
                f"length {length}; tolerance {tolerance:g}"
            )
        worst = max(worst, err)
    return worst
