"""Trainer tests on tiny models and a tiny in-memory dataset (short chunks, a few steps each)."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from danna_sep.cli import main
from danna_sep.config import configs_dir, load_config
from danna_sep.errors import CheckpointError, DannaError, DatasetError
from danna_sep.train import ShardedBatchSampler, load_weights, read_state_dict, train

torch.set_num_threads(1)  # the suite runs two test files at once on two cores

SAMPLES = 8192  # 9 STFT frames


class ToyStems(Dataset):
    """Four synthetic stems per item, every random choice from (seed, epoch, index) like the real datasets.

    drums = gated noise, bass / other / vocals = tones in their own registers; stereo with a random balance.
    """

    def __init__(self, items: int, random: bool = True, seed: int = 0, samples: int = SAMPLES, trigger=None):
        self.items, self.random, self.seed, self.samples = items, random, seed, samples
        self.epoch = 0
        self.trigger = trigger  # (index, signal): the dataset sends the signal when it reads that item

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int):
        if self.trigger is not None and index == self.trigger[0]:
            os.kill(os.getpid(), self.trigger[1])
        rng = np.random.default_rng([self.seed, self.epoch if self.random else 0, index])
        t = np.arange(self.samples) / 44100
        drums = rng.standard_normal(self.samples) * (np.sin(2 * np.pi * 8 * t + rng.uniform(0, 6)) > 0.6) * 0.3
        tones = [
            a * np.sin(2 * np.pi * rng.uniform(lo, hi) * t)
            for a, lo, hi in ((0.3, 50, 120), (0.2, 300, 600), (0.2, 1000, 2000))
        ]
        stems = np.stack([np.stack([s, s * rng.uniform(0.5, 1.0)]) for s in (drums, *tones)]).astype(np.float32)
        stems = torch.from_numpy(stems)
        return stems.sum(0), stems


def tiny(name: str, *overrides: str, **trainer) -> dict:
    """A tiny config for in-memory data: no workers, no device augmentation unless asked, fast validation."""
    cfg = json.loads((configs_dir() / "tiny" / f"{name}.json").read_text())
    sets = [
        "data_loader.train.num_workers=0",
        "data_loader.valid.num_workers=0",
        "device_augment.enabled=false",
        "trainer.epochs=1",
        "trainer.audio_seconds=0",
        "trainer.log_every=1",
        "data_loader.valid.batch_size=2",
    ]
    sets += [f"trainer.{k}={json.dumps(v)}" for k, v in trainer.items()]
    from danna_sep.config import apply_overrides, validate_config

    return validate_config(apply_overrides(cfg, [*sets, *overrides]))


XUMX = ("arch.args.hidden_channels=8",)
DEMUCS = ("arch.args.channels=4", "arch.args.depth=3")


def run(cfg, tmp_path, train_items=8, valid_items=2, **kwargs):
    kwargs.setdefault("workdir", tmp_path)
    kwargs.setdefault("tensorboard", False)
    return train(
        cfg,
        train_set=ToyStems(train_items),
        valid_set=ToyStems(valid_items, random=False),
        progress=False,
        verbose=False,
        **kwargs,
    )


def params(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def assert_same(a: dict, b: dict, exact=True, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)


# ---------------------------------------------------------------------------------------------------------------
# resume, DDP, accumulation


def test_resume_mid_epoch_is_bit_exact(tmp_path):
    # 2 epochs × 4 batches, accumulation over 2, device augmentation on: 6 steps + resume + 2 steps == 8 steps
    cfg = tiny(
        "x_umx_mwf",
        *XUMX,
        "data_loader.train.batch_size=2",
        "device_augment.enabled=true",
        "device_augment.args.pitch_p=0.5",
        "device_augment.args.speed_p=0.5",
        epochs=2,
        cum_steps=2,
        deterministic=True,
    )
    full = run(cfg, tmp_path / "full")
    part = run(cfg, tmp_path / "part", max_steps=6)
    assert (part.steps, part.epochs_completed, part.optimizer_steps) == (6, 1, 3)
    state = torch.load(part.last_checkpoint, weights_only=True)
    assert (state["trainer"]["epoch"], state["trainer"]["batch"]) == (1, 2)
    resumed = run(cfg, tmp_path / "part", checkpoint=part.last_checkpoint)
    assert (resumed.steps, resumed.optimizer_steps) == (full.steps, full.optimizer_steps) == (8, 4)
    assert_same(params(full.last_checkpoint), params(resumed.last_checkpoint))
    a = torch.load(full.last_checkpoint, weights_only=True)["optimizer"]["state"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    assert resumed.history[-1]["sdr"] == full.history[-1]["sdr"]
    # and a different seed really trains differently (the comparison above can fail)
    other = run(cfg, tmp_path / "other", max_steps=6, overrides=["trainer.seed=1"])
    a, b = params(other.last_checkpoint), params(part.last_checkpoint)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_names_are_resolved_once_per_run(tmp_path, monkeypatch):
    """train() checks the config once; the trainer and the builders use the classes it kept."""
    from danna_sep.train import build

    cfg = tiny("x_umx_mwf", *XUMX)  # a plain dict, as train() takes it
    calls = []
    resolve = build.resolve
    monkeypatch.setattr(build, "resolve", lambda cfg: calls.append(1) or resolve(cfg))
    run(cfg, tmp_path, max_steps=1)
    assert len(calls) == 1


def test_two_process_ddp_matches_single_process(tmp_path):
    # global batch 4 = 2 per rank; DemucsSplit has no batch norm or dropout, so only float order differs
    cfg = tiny("demucs_split", *DEMUCS, "data_loader.train.batch_size=4", cum_steps=1, epochs=1)
    single = run(cfg, tmp_path / "single", train_items=12)
    ddp = run(cfg, tmp_path / "ddp", train_items=12, device_ids=[0, 1])
    assert ddp.steps == single.steps == 3 and ddp.optimizer_steps == 3
    assert_same(params(single.last_checkpoint), params(ddp.last_checkpoint), exact=False)
    before = torch.load(single.last_checkpoint, weights_only=True)
    torch.manual_seed(cfg["trainer"]["seed"])
    from danna_sep.models import build_model

    init = build_model(cfg["arch"]).state_dict()
    assert any(not torch.allclose(init[k], before["model"][k]) for k in init)  # it did train
    assert ddp.history[0]["items"] == single.history[0]["items"] == 2  # validation sharded, then summed
    assert ddp.history[0]["loss"] == pytest.approx(single.history[0]["loss"], rel=1e-4)


def test_sharded_sampler_splits_global_batches_and_resumes():
    single = ShardedBatchSampler(10, 4, shuffle=True, drop_last=True, seed=3)
    ranks = [ShardedBatchSampler(10, 4, shuffle=True, drop_last=True, seed=3, rank=r, world=2) for r in (0, 1)]
    for s in (single, *ranks):
        s.set_epoch(5)
    whole = list(single)
    parts = [list(r) for r in ranks]
    assert len(whole) == 2 and [sorted(a + b) for a, b in zip(*parts, strict=True)] == [sorted(b) for b in whole]
    single.set_epoch(5, start=1)
    assert list(single) == whole[1:]
    single.set_epoch(6)
    assert list(single) != whole  # a new order every epoch
    short = ShardedBatchSampler(5, 4, shuffle=False, drop_last=False, rank=1, world=4)
    assert list(short) == [[1], [0]]  # the 1-item last batch is padded so every rank gets one


def test_accumulation_equals_the_large_batch_and_flushes_at_epoch_end(tmp_path):
    # 2 micro-batches of 2 with cum_steps 2 == one batch of 4 (no batch norm in Demucs)
    base = ("data_loader.train.shuffle=false", *DEMUCS)
    big = run(tiny("demucs_split", *base, "data_loader.train.batch_size=4", cum_steps=1), tmp_path / "big")
    acc = run(tiny("demucs_split", *base, "data_loader.train.batch_size=2", cum_steps=2), tmp_path / "acc")
    assert (big.optimizer_steps, acc.optimizer_steps) == (2, 2)
    assert_same(params(big.last_checkpoint), params(acc.last_checkpoint), exact=False)
    # 3 batches per epoch with cum_steps 2: the odd batch is a step of its own, in each epoch
    odd = run(
        tiny("demucs_split", *base, "data_loader.train.batch_size=2", cum_steps=2, epochs=2),
        tmp_path / "odd",
        train_items=6,
    )
    assert (odd.steps, odd.optimizer_steps) == (6, 4)


# ---------------------------------------------------------------------------------------------------------------
# validation, schedulers, early stopping, checkpoints, logging


def test_validation_checkpoints_and_tensorboard(tmp_path):
    cfg = tiny("x_umx_mwf", *XUMX, "trainer.audio_seconds=0.1", epochs=2, n_saved=1)
    result = run(cfg, tmp_path, tensorboard=True)
    assert len(result.history) == 2
    for entry in result.history:
        assert set(entry["sdr"]) == set(entry["baseline"]) == {"drums", "bass", "other", "vocals"}
        assert np.isfinite(entry["loss"]) and np.isfinite(entry["avg_sdr"])
        # the baseline is the mixture itself, scored by the same global SDR
        assert entry["avg_baseline"] < entry["avg_sdr"] + 30
    saved = sorted(p.name for p in (tmp_path / "saved").iterdir())
    best = max(h["avg_sdr"] for h in result.history)
    assert saved == sorted([f"tiny_X-UMX_checkpoint_{best:.4f}.pt", "tiny_X-UMX_last.pt"])  # n_saved=1, no temp files
    state = torch.load(result.last_checkpoint, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "trainer", "rng", "config"} <= set(state)
    assert set(state["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    assert state["config"]["arch"] == cfg["arch"] and state["trainer"]["epoch"] == 2
    # the multistep scheduler acted (tiny config: milestone at epoch 2)
    assert result.lr == pytest.approx(cfg["optimizer"]["args"]["lr"] * 0.3)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.log_dir), size_guidance={"audio": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "training/loss",
        "training/loss_f",
        "training/loss_t",
        "training/lr",
        "validation/loss",
        "validation/vocals_sdr",
        "validation/vocals_sdr_mixture",
        "validation/avg_sdr",
    } <= scalars
    audio = set(events.Tags()["audio"])
    assert {"audio/mixture", "audio/drums", "audio/vocals"} <= audio
    assert events.Audio("audio/vocals")[0].content_type == "audio/wav"


def test_plateau_scheduler_and_early_stopping_act(tmp_path):
    # lr so small that nothing improves: the plateau scheduler cuts it and early stopping ends the run
    cfg = tiny(
        "demucs_split",
        *DEMUCS,
        "optimizer.type=SGD",
        'optimizer.args={"lr": 1e-12}',
        'lr_scheduler.args={"factor": 0.5, "patience": 0, "threshold": 0.1}',
        epochs=10,
        patience=2,
    )
    result = run(cfg, tmp_path)
    assert result.stopped_early and result.epochs_completed == 3 and len(result.history) == 3
    assert result.lr == pytest.approx(1e-12 * 0.5**2)


def test_divergence_stops_with_a_clear_error(tmp_path):
    cfg = tiny("demucs_split", *DEMUCS, "optimizer.type=SGD", 'optimizer.args={"lr": 1e30}', cum_steps=1)
    with pytest.raises(DannaError, match="diverged"):
        run(cfg, tmp_path, train_items=8)


def test_sigterm_saves_a_resumable_checkpoint(tmp_path):
    cfg = tiny("demucs_split", *DEMUCS, "data_loader.train.batch_size=2", epochs=2)
    train_set = ToyStems(8, trigger=(None, signal.SIGTERM))
    sampler = ShardedBatchSampler(8, 2, True, True, cfg["trainer"]["seed"])
    sampler.set_epoch(0)
    train_set.trigger = (list(sampler)[1][0], signal.SIGTERM)  # first item of the second batch
    stopped = train(
        cfg,
        train_set=train_set,
        valid_set=ToyStems(2, random=False),
        workdir=tmp_path,
        progress=False,
        verbose=False,
        tensorboard=False,
    )
    assert stopped.interrupted and stopped.steps == 2 and stopped.history == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = run(cfg, tmp_path, checkpoint=stopped.last_checkpoint)
    full = run(cfg, tmp_path / "full")
    assert resumed.steps == full.steps == 8
    assert_same(params(full.last_checkpoint), params(resumed.last_checkpoint))


def test_gradient_clipping_bounds_the_update(tmp_path):
    # SGD with lr 1: the update is the clipped gradient, so its global norm is at most grad_clip
    cfg = tiny("demucs_split", *DEMUCS, "optimizer.type=SGD", 'optimizer.args={"lr": 1.0}', grad_clip=1e-3)
    result = run(cfg, tmp_path, max_steps=2)  # one optimizer step (cum_steps 2)
    assert result.optimizer_steps == 1
    torch.manual_seed(cfg["trainer"]["seed"])
    from danna_sep.models import build_model

    init, after = build_model(cfg["arch"]).state_dict(), params(result.last_checkpoint)
    norm = torch.sqrt(sum(((after[k] - init[k]) ** 2).sum() for k in init))
    assert 1e-4 < norm <= 1e-3 * (1 + 1e-4)


def test_amp_runs_on_cpu(tmp_path):
    for dtype in ("float16", "bfloat16"):
        cfg = tiny("demucs_split", *DEMUCS, amp_enabled=True, amp_dtype=dtype)
        result = run(cfg, tmp_path / dtype, train_items=4)
        state = torch.load(result.last_checkpoint, weights_only=True)
        assert bool(state["scaler"]) == (dtype == "float16")  # the scaler only for fp16
        assert np.isfinite(result.history[0]["loss"])


# ---------------------------------------------------------------------------------------------------------------
# weights


def test_weights_load_strictly_or_partially_with_a_report(tmp_path):
    cfg = tiny("x_umx_mwf", *XUMX)
    from danna_sep.models import build_model

    source = build_model(cfg["arch"])
    good = tmp_path / "xumx_weights.pth"
    torch.save({"model": source.state_dict(), "config": cfg}, good)  # the converter's layout
    target = build_model(cfg["arch"])
    report = load_weights(target, good)
    assert report.complete and all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, bare)  # DataParallel-style names
    assert load_weights(build_model(cfg["arch"]), bare).complete

    other = build_model(tiny("x_umx_mwf", "arch.args.hidden_channels=16")["arch"])
    bad = tmp_path / "other.pth"
    torch.save(other.state_dict(), bad)
    victim = build_model(cfg["arch"])
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    with pytest.raises(CheckpointError, match="shape mismatch") as info:
        load_weights(victim, bad)
    assert "partial" in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())  # strict: nothing loaded
    report = load_weights(victim, bad, partial=True)
    assert report.mismatched and report.loaded and not report.complete
    assert "shape mismatch" in report.describe()
    for k in report.loaded:
        assert torch.equal(victim.state_dict()[k], other.state_dict()[k])
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")


def test_weights_from_a_training_checkpoint_start_a_new_run(tmp_path):
    cfg = tiny("demucs_split", *DEMUCS)
    first = run(cfg, tmp_path / "a", train_items=4)
    second = run(cfg, tmp_path / "b", train_items=4, weights=first.last_checkpoint, max_steps=0)
    assert second.steps == 0
    assert_same(params(first.last_checkpoint), params(second.last_checkpoint))
    with pytest.raises(CheckpointError, match="weights only"):
        bare = tmp_path / "bare.pt"
        torch.save({"model": params(first.last_checkpoint)}, bare)
        run(cfg, tmp_path / "c", checkpoint=bare)


def test_weights_made_with_other_architecture_options_are_named(tmp_path, capsys):
    """Imported released weights carry ``legacy: true``: fine-tuning them with a config that lacks it is allowed
    (the shapes match) but said, with the option to set."""
    from danna_sep.models import build_model

    cfg = tiny("demucs_split", *DEMUCS)
    legacy = {**cfg["arch"], "args": {**cfg["arch"]["args"], "legacy": True}}
    weights = tmp_path / "demucs_imported.pt"
    torch.save({"model": build_model(legacy).state_dict(), "config": {"arch": legacy}}, weights)
    report = load_weights(build_model(cfg["arch"]), weights)
    assert report.complete and report.arch == legacy
    assert report.arch_differences(cfg["arch"]) == ["legacy=True (this config: False)"]
    assert report.arch_differences(legacy) == []
    train(
        cfg,
        train_set=ToyStems(2),
        valid_set=ToyStems(2, random=False),
        progress=False,
        workdir=tmp_path,
        tensorboard=False,
        weights=weights,
        max_steps=0,
    )
    assert "legacy=True (this config: False)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------
# command line and datasets


def test_command_line_on_a_synthetic_dataset(tmp_path, capsys):
    from danna_sep.data.synth import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", tracks={"train": 2, "valid": 1}, seconds=1.5, seed=0)
    args = [
        "train",
        "tiny/demucs_split",
        "--root",
        str(root),
        "--workdir",
        str(tmp_path),
        "--no-progress",
        "--set",
        "trainer.epochs=1",
        "--set",
        "dataset.train.args.samples_per_track=1",
        "--set",
        "data_loader.train.num_workers=0",
        "--set",
        "trainer.audio_seconds=0.5",
        "--set",
        "arch.args.depth=3",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "avg" in out and "mixture" in out
    assert (tmp_path / "saved" / "tiny_DemucsSplit_last.pt").is_file()
    assert any((tmp_path / "runs" / "tiny DemucsSplit").iterdir())


def test_missing_dataset_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MUSDB_ROOT", raising=False)
    assert main(["train", "tiny/x_umx_mwf", "--root", str(tmp_path / "nowhere"), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "does not exist" in err and "Traceback" not in err
    cfg = load_config(configs_dir() / "tiny" / "x_umx_mwf.json")
    with pytest.raises(DatasetError, match="MUSDB_ROOT"):
        train(cfg, workdir=tmp_path)  # no root anywhere
    monkeypatch.setenv("MUSDB_ROOT", str(tmp_path / "env"))
    with pytest.raises(DatasetError, match=r"from \$MUSDB_ROOT"):
        train(cfg, workdir=tmp_path)


def test_bad_config_from_the_command_line(tmp_path, capsys):
    assert main(["train", "tiny/x_umx_mwf", "--set", "trainer.epochs=0", "--workdir", str(tmp_path)]) == 2
    assert "trainer.epochs" in capsys.readouterr().err


def test_checkpoint_file_names_need_no_quoting():
    from danna_sep.train.trainer import file_stem

    assert file_stem("UNet Attention") == "UNet_Attention"
    assert file_stem("CrossNet Open-Unmix") == "CrossNet_Open-Unmix"
    assert file_stem("tiny  X-UMX v1.2") == "tiny_X-UMX_v1.2"
    assert file_stem("a/b: c") == "a_b_c"  # never a sub-folder or a drive letter
    assert file_stem(" / ") == "model"


# ---------------------------------------------------------------------------------------------------------------
# trainer.compile


def test_compiled_training_steps_match_eager(tmp_path, monkeypatch):
    # dynamo's graph capture and AOT autograd's joint forward/backward graph, as inductor gets them, but run eagerly:
    # inductor's C++ code generation takes minutes on a CI core (its speed is benchmarks/bench_models.py's)
    compile, compiled_models = torch.compile, []
    monkeypatch.setattr(
        torch, "compile", lambda model: compiled_models.append(model) or compile(model, backend="aot_eager")
    )
    # SGD: the update is the gradient, so the comparison sees gradient errors (Adam's first step is ±lr per weight,
    # and flips sign with any rounding of a near-zero gradient)
    cfg = tiny("unet_attn", "data_loader.train.batch_size=2", "optimizer.type=SGD", 'optimizer.args={"lr": 0.1}')
    eager = run(cfg, tmp_path / "eager", max_steps=2)
    assert not compiled_models
    compiled = run({**cfg, "trainer": {**cfg["trainer"], "compile": True}}, tmp_path / "compiled", max_steps=2)
    assert len(compiled_models) == 1
    a, b = params(eager.last_checkpoint), params(compiled.last_checkpoint)
    assert_same(a, b, exact=False, atol=1e-5)  # the bare module's names: no `_orig_mod.` in the checkpoint
    from danna_sep.models import build_model

    torch.manual_seed(cfg["trainer"]["seed"])  # the run's initial weights, as in the clipping test
    init = build_model(cfg["arch"]).state_dict()
    assert any(not torch.equal(init[k], b[k]) for k in init if init[k].is_floating_point())  # it did train


def test_failed_compilation_trains_eager_with_a_warning(tmp_path, monkeypatch, capsys):
    from torch._dynamo.exc import TorchDynamoException

    class Broken(torch.nn.Module):  # what torch.compile returns when its backend fails at the first call
        def forward(self, x):
            raise TorchDynamoException("backend compiler failed: no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda model: Broken())
    cfg = tiny("demucs_split", *DEMUCS)
    eager = run(cfg, tmp_path / "eager", max_steps=2)
    fallen = train(
        {**cfg, "trainer": {**cfg["trainer"], "compile": True}},
        train_set=ToyStems(8),
        valid_set=ToyStems(2, random=False),
        progress=False,
        verbose=True,
        workdir=tmp_path / "fallen",
        tensorboard=False,
        max_steps=2,
    )
    assert "warning: torch.compile failed (backend compiler failed: no C++ compiler found)" in capsys.readouterr().out
    assert_same(params(eager.last_checkpoint), params(fallen.last_checkpoint))
