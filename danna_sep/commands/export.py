"""``danna export [CONFIG] CHECKPOINT OUT``: a training checkpoint → the TorchScript (or ONNX) file danna-sep loads.

The model is rebuilt from CONFIG's ``arch`` (the seed's ``jit_convert.py CONFIG CHECKPOINT OUT``) or, without
CONFIG, from the config stored in the checkpoint; the weights load strictly. The file keeps the I/O contract of
:mod:`danna_sep.export` and stores the model's metadata. Unless ``--no-verify``, the written file is loaded back and
compared with the eager model on random inputs of several lengths.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError

HELP = "export a training checkpoint to TorchScript (or ONNX) for danna-sep"

# lengths (frames / samples) the written file is checked at: short, odd, and a multiple of 64
_VERIFY_FRAMES = (7, 100, 256)
_VERIFY_SAMPLES = (44100, 3 * 44100 + 17)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="[CONFIG] CHECKPOINT OUT",
        help="optional training config (JSON), the training checkpoint, and the file to write "
        "(e.g. $DANNA_CHECKPOINTS/unet_attention.pth)",
    )
    parser.add_argument(
        "--onnx", action="store_true", help="write ONNX instead of TorchScript (implied by an OUT ending in .onnx)"
    )
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip comparing the written file with the eager model"
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest relative difference accepted by the check (default 1e-5)"
    )
    parser.add_argument("--print-code", action="store_true", help="print the TorchScript code (as the seed did)")


def run(args: argparse.Namespace) -> int:
    from ..config import read_config
    from ..export import export_onnx, export_torchscript, verify
    from ..inference import LoadedModel, ModelInfo, load_model, model_from_checkpoint

    if len(args.paths) not in (2, 3):
        raise ConfigError(f"expected [CONFIG] CHECKPOINT OUT, got {len(args.paths)} path(s)")
    config_path, checkpoint, out = (None, *args.paths) if len(args.paths) == 2 else args.paths
    out = Path(out)
    onnx = args.onnx or out.suffix.lower() == ".onnx"
    config = read_config(config_path) if config_path else None
    model, cfg = model_from_checkpoint(checkpoint, config)
    info = ModelInfo.from_model(model, cfg)
    if cfg.get("_epochs") is not None:
        info = ModelInfo(**{**info.__dict__, "extra": {"epochs": cfg["_epochs"], "checkpoint": Path(checkpoint).name}})
    n_params = sum(p.numel() for p in model.parameters())
    epochs = f", trained {cfg['_epochs']} epochs" if cfg.get("_epochs") is not None else ""
    print(f"{cfg['arch']['type']}: {n_params:,} parameters{epochs}")

    if onnx:
        info = export_onnx(model, out, info)
    else:
        scripted = export_torchscript(model, out, info)
        if args.print_code:
            print(scripted.code)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({'ONNX' if onnx else 'TorchScript'}, {size:.1f} MiB, {info.domain} model)")

    if args.verify:
        loaded: LoadedModel = load_model(out)
        lengths = (
            _VERIFY_FRAMES
            if info.domain == "spectral"
            else (info.fixed_length,)
            if info.fixed_length
            else _VERIFY_SAMPLES
        )
        err = verify(model, loaded, lengths, args.tolerance)
        unit = "frames" if info.domain == "spectral" else "samples"
        print(
            f"verified against the eager model: max relative difference {err:.2g} "
            f"(lengths {', '.join(map(str, lengths))} {unit})"
        )
    return 0
