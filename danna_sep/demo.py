"""The end-to-end demo (``make demo`` = ``python -m danna_sep.demo``): data → three models → blend → evaluation.

1. builds the synthetic dataset in ``.demo/dataset`` (8 train × 12 s, 2 valid, 2 test; cached), or uses
   ``$MUSDB_ROOT`` when set (then only the first ``--tracks`` valid and test tracks are separated and scored);
2. trains the three tiny models (``configs/tiny``) for a few epochs each, capped in steps;
3. exports them to ``.demo/checkpoints`` under the released file names;
4. fits the blend weights on the validation split (``.demo/checkpoints/bag.json``, which ``danna-sep
   --checkpoints .demo/checkpoints`` then uses by default);
5. separates a test song with the fitted blend into ``separated/<track>/<stem>.wav``;
6. prints the evaluation table on the test split: each model, the original-weight blend, the fitted blend and the
   mixture baseline (museval v4 and global SDR), and draws it in ``.demo/plots`` (box plots over tracks and
   per-track bars, :func:`danna_sep.plots.evaluation_charts`; skipped with a note without matplotlib).

Everything is cached under ``.demo``: a second run reuses the dataset, the trained checkpoints and the estimates.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import SAMPLE_RATE, SOURCES
from .blend import MODEL_FILES, ORIGINAL_BAG
from .errors import DannaError
from .runtime import keep_freed_memory

# role → (tiny config, epochs) — sized so that each model trains in one to two minutes on 2 CPU cores
MODELS = {
    "xumx": ("x_umx_mwf.json", 6),
    "unet": ("unet_attn.json", 6),
    "demucs": ("demucs_split.json", 6),
}
MAX_STEPS = 192  # micro-batches per model (the cap that matters on the real dataset, whose epochs are far longer)


def _step(title: str, started: float) -> None:
    print(f"\n== [{time.perf_counter() - started:6.1f} s] {title}", flush=True)


def build_dataset(workdir: Path) -> Path:
    from .data import make_synthetic_dataset

    root = os.environ.get("MUSDB_ROOT")
    if root:
        print(f"using MUSDB_ROOT={root}")
        return Path(root).expanduser()
    return make_synthetic_dataset(workdir / "dataset", tracks={"train": 8, "valid": 2, "test": 2}, seconds=12, seed=0)


def train_models(root: Path, workdir: Path, epochs_scale: float) -> dict[str, Path]:
    """role → best training checkpoint (reused when a previous demo run finished it)."""
    from .train import config_path, train

    out = {}
    for role, (config, epochs) in MODELS.items():
        folder = workdir / "train" / role
        done = folder / "DONE"
        if done.is_file() and Path(done.read_text().strip()).is_file():
            out[role] = Path(done.read_text().strip())
            print(f"{role}: reusing {out[role]}")
            continue
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted run: start clean
        t0 = time.perf_counter()
        epochs = max(1, round(epochs * epochs_scale))
        result = train(
            config_path(f"tiny/{config}"),
            root=root,
            device="cpu",
            workdir=folder,
            overrides=[f"trainer.epochs={epochs}", "trainer.val_epoch_length=2", "trainer.audio_seconds=0"],
            max_steps=MAX_STEPS,
            progress=False,
            tensorboard=False,
            verbose=True,
        )
        best = result.best_checkpoint or result.last_checkpoint
        if best is None:
            raise RuntimeError(f"{role}: training finished without writing a checkpoint")
        done.write_text(str(best))
        out[role] = best
        print(f"{role}: trained {result.epochs_completed} epoch(s) in {time.perf_counter() - t0:.0f} s → {best}")
    return out


def export_models(checkpoints: dict[str, Path], folder: Path) -> dict:
    """Export every checkpoint to TorchScript in ``folder``; role → the loaded exported model. A model that cannot
    be exported is reported and used eagerly (role → eager LoadedModel) so that the rest of the demo still runs."""
    from .errors import CheckpointError
    from .export import export_torchscript
    from .inference import LoadedModel, ModelInfo, load_model, model_from_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    models = {}
    for role, ckpt in checkpoints.items():
        out = folder / MODEL_FILES[role][0]
        if not (out.is_file() and out.stat().st_mtime >= ckpt.stat().st_mtime):
            model, cfg = model_from_checkpoint(ckpt)
            info = ModelInfo.from_model(model, cfg)
            try:
                export_torchscript(model.eval(), out, info)
            except CheckpointError as exc:
                print(f"{role}: EXPORT FAILED ({exc}); the demo goes on with the eager model of {ckpt.name}")
                models[role] = LoadedModel.from_module(model.eval(), info)
                continue
            print(f"{role}: exported {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        models[role] = load_model(out, role=role)
    return models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m danna_sep.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".demo", help="cache folder (default .demo)")
    parser.add_argument("--separated", default="separated", help="where the test song's stems go")
    parser.add_argument("--tracks", type=int, default=2, help="valid/test tracks used with MUSDB_ROOT (default 2)")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every model's epochs")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="scoring processes")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        return run(args)
    except DannaError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    import torch

    from .audio import save_audio
    from .blend import Bag
    from .data import split_tracks
    from .evaluate import evaluate, fit_from_cache, format_table, separate_to_cache
    from .separate import BAG_FILE, Separator

    started = time.perf_counter()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    _step("dataset", started)
    root = build_dataset(workdir)
    limit = args.tracks if os.environ.get("MUSDB_ROOT") else None
    valid = split_tracks(root, "valid")[:limit]
    test = split_tracks(root, "test")[:limit]
    print(f"{root}: {len(valid)} valid and {len(test)} test track(s) used")

    _step("training the three tiny models", started)
    checkpoints = train_models(root, workdir, args.epochs_scale)

    _step("export", started)
    ckpt_dir = workdir / "checkpoints"
    models = export_models(checkpoints, ckpt_dir)
    roles = list(ORIGINAL_BAG.models)
    keys = {
        r: checkpoints[r] for r in roles if models[r].path is None
    }  # eager fallbacks: key the cache on the checkpoint

    _step("fitting the blend on the validation split", started)
    cache = workdir / "cache"
    valid_refs = separate_to_cache(models, valid, cache, root, "valid", keys=keys)
    bag = fit_from_cache(valid, valid_refs, roles, jobs=args.jobs, log=lambda *_: None)
    bag_path = ckpt_dir / BAG_FILE  # where danna-sep --checkpoints ckpt_dir finds it by itself
    bag.save(bag_path)
    print("fitted weights (rows " + ", ".join(roles) + "; columns " + ", ".join(SOURCES) + "):")
    print(np.array2string(bag.weights, precision=3, suppress_small=True))
    print("original weights:")
    print(np.array2string(ORIGINAL_BAG.weights, precision=3, suppress_small=True))

    _step(f"separating {test[0].name} with the fitted blend", started)
    if keys:  # some model could not be exported: blend the models in memory
        separator = Separator(models, Bag.load(bag_path))
    else:
        separator = Separator.from_checkpoints(ckpt_dir, bag=Bag.load(bag_path), device="cpu")
    mixture = torch.from_numpy(test[0].read(["mixture"])[0])
    with torch.inference_mode():
        stems = separator.separate(mixture, SAMPLE_RATE)
    out = Path(args.separated) / test[0].name
    out.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        save_audio(out / f"{name}.wav", stems[name], SAMPLE_RATE)
    print(f"wrote {', '.join(str(out / f'{n}.wav') for n in SOURCES)}")

    _step("evaluation on the test split", started)
    test_refs = separate_to_cache(models, test, cache, root, "test", keys=keys)
    systems = {r: {r: np.ones(len(SOURCES))} for r in roles}
    systems["original blend"] = {r: ORIGINAL_BAG.column(r) for r in roles}
    systems["fitted blend"] = {r: bag.column(r) for r in roles}
    summary = evaluate(test, test_refs, systems, "test", workdir / "evaluation", jobs=args.jobs, log=lambda *_: None)
    print(format_table(summary))
    print(f"\nsummary: {workdir / 'evaluation' / 'summary.json'}")
    draw_charts(summary, workdir / "plots")
    _step("done", started)
    print(
        f"\nthe demo's models are in {ckpt_dir}/ and its fitted blend is {bag_path}; on a song of your own:\n"
        f"  {try_command(ckpt_dir, bag_path)}"
    )
    return 0


def draw_charts(summary: dict, folder: Path) -> list[Path]:
    """The evaluation's charts in ``folder`` (printed); none, with a note, where matplotlib is missing: the
    pictures are an optional extra, the demo's numbers are not."""
    from .plots import evaluation_charts, require_matplotlib

    try:
        require_matplotlib("charts")
    except DannaError as exc:
        print(f"{exc} (the charts are left out)")
        return []
    charts = evaluation_charts(summary, folder)
    print("charts: " + ", ".join(str(c) for c in charts))
    return charts


def try_command(ckpt_dir: Path, bag_path: Path) -> str:
    """The ``danna-sep`` command that separates a song with the demo's models and fitted blend (tiny models
    trained for minutes on synthetic songs: a demonstration of the pipeline, not a useful separation); a bag
    that is the folder's ``bag.json`` needs no ``--bag``."""
    from .separate.separator import BAG_FILE

    bag = "" if bag_path == ckpt_dir / BAG_FILE else f" --bag {bag_path}"
    return f"{Path(sys.executable).parent / 'danna-sep'} --checkpoints {ckpt_dir}{bag} song.wav"


if __name__ == "__main__":
    sys.exit(main())
