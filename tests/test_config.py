import json
from pathlib import Path

import pytest

from danna_sep.config import apply_overrides, configs_dir, load_config, parse_override, read_config, validate_config
from danna_sep.errors import ConfigError

CONFIGS = configs_dir()
FULL = ["x_umx_mwf", "unet_attn", "demucs_split"]


def _raw(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def _error(raw: dict, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(apply_overrides(raw, overrides))
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# shipped configs


def test_configs_ship_inside_the_package_and_the_root_folder_links_to_them():
    import danna_sep

    package = Path(danna_sep.__file__).resolve().parent
    assert package / "configs" == CONFIGS  # package data: wheels carry the configs
    assert sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.json")) == sorted(
        f"{prefix}{n}.json" for prefix in ("", "tiny/") for n in FULL
    )
    root = package.parent / "configs"
    if root.exists():  # a source checkout: `python train.py configs/...` keeps working
        assert root.resolve() == CONFIGS


@pytest.mark.parametrize("name", FULL + [f"tiny/{n}" for n in FULL])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.json")
    # the model output order, whatever order the file lists the targets in
    assert cfg["trainer"]["targets"] == ["drums", "bass", "other", "vocals"]
    assert cfg["trainer"]["time_domain"] == (cfg["arch"]["type"] == "DemucsSplit")


@pytest.mark.parametrize("name", FULL)
def test_full_configs_keep_the_original_values_with_the_fixes(name):
    cfg = load_config(CONFIGS / f"{name}.json")
    original = {  # reference §2
        "x_umx_mwf": ("CrossNet Open-Unmix", 6.0, 64, 1e-4, 4, 70, 1, False, 1),
        "unet_attn": ("UNet Attention", 11.88, 32, 2e-4, 16, 700, 1, False, 0),
        "demucs_split": ("DemucsSplit", 10, 150, 3e-4, 3, 340, 21, True, None),
    }[name]
    tr = cfg["trainer"]
    train_args = cfg["dataset"]["train"]["args"]
    got = (
        cfg["name"],
        train_args["seq_duration"],
        train_args["samples_per_track"],
        cfg["optimizer"]["args"]["lr"],
        cfg["data_loader"]["train"]["batch_size"],
        tr["epochs"],
        tr["cum_steps"],
        tr["amp_enabled"],
        None if tr["time_domain"] else cfg["MWF"]["n_iter"],
    )
    assert got == original
    # fixes (reference §12.5, §12.7): train leaves the validation tracks out, schedulers and early stopping act
    assert train_args["split"] == "train" and not train_args.get("include_valid_in_train", False)
    assert cfg["dataset"]["valid"]["args"]["split"] == "valid"
    assert tr["patience"] is not None and tr["patience"] < tr["epochs"]
    sched = cfg["lr_scheduler"]
    if sched["type"] == "MultiStepLR":
        assert max(sched["args"]["milestones"]) < tr["epochs"]
    else:
        assert sched["type"] == "ReduceLROnPlateau" and sched["args"]["patience"] < tr["epochs"]


@pytest.mark.parametrize("name", FULL)
def test_tiny_configs_keep_the_io_contract(name):
    full, tiny = load_config(CONFIGS / f"{name}.json"), load_config(CONFIGS / "tiny" / f"{name}.json")
    assert tiny["arch"]["type"] == full["arch"]["type"]
    assert tiny["loss"] == full["loss"] or tiny["loss"]["type"] == full["loss"]["type"]
    for key in ("n_fft", "hop_length", "time_domain"):
        assert tiny["trainer"][key] == full["trainer"][key]
    for key in ("n_fft", "max_bins", "nb_channels"):
        if key in full["arch"]["args"]:
            assert tiny["arch"]["args"][key] == full["arch"]["args"][key]


# ---------------------------------------------------------------------------------------------------------------
# errors name the key path and what is allowed


def test_unknown_key_names_path_and_allowed_keys():
    msg = _error(_raw("x_umx_mwf"), "trainer.epoch=3")
    assert "trainer.epoch: unknown key" in msg and "epochs" in msg and "cum_steps" in msg


def test_unknown_top_level_key():
    raw = _raw("x_umx_mwf")
    raw["optimiser"] = {}
    msg = _error(raw)
    assert "optimiser: unknown key" in msg and "optimizer" in msg


def test_wrong_type_is_not_coerced():
    msg = _error(_raw("x_umx_mwf"), 'trainer.epochs="3"')
    assert "trainer.epochs" in msg and "'3'" in msg
    assert "trainer.amp_enabled" in _error(_raw("x_umx_mwf"), "trainer.amp_enabled=1")


def test_missing_required_fields_are_all_reported():
    raw = _raw("unet_attn")
    del raw["trainer"]["epochs"], raw["name"]
    msg = _error(raw)
    assert "trainer.epochs: missing required key" in msg and "name: missing required key" in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("arch.type=UNet", ["arch.type", "UNetAttn", "X_UMX", "DemucsSplit"]),
        ("optimizer.type=Adamm", ["optimizer.type", "'Adamm'", "Adam", "AdamW", "SGD"]),
        ("lr_scheduler.type=Plateau", ["lr_scheduler.type", "ReduceLROnPlateau", "MultiStepLR"]),
        ("loss.type=MSE", ["loss.type", "CLoss", "L1Loss"]),
        ("dataset.valid.type=MUSDB", ["dataset.valid.type", "FastMUSDB"]),
        ("trainer.amp_dtype=fp8", ["trainer.amp_dtype", "float16", "bfloat16"]),
    ],
)
def test_unknown_names_list_the_allowed_ones(override, expected):
    msg = _error(_raw("x_umx_mwf"), override)
    for text in expected:
        assert text in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optimizer.args.lrr=0.1", ["optimizer.args.lrr: unknown argument of Adam", "weight_decay"]),
        ('optimizer.args.lr="fast"', ["optimizer.args.lr: expected float"]),
        ('lr_scheduler.args.milestones=["a"]', ["lr_scheduler.args.milestones"]),
        ("lr_scheduler.args.verbose=true", ["lr_scheduler.args.verbose", "milestones"]),
        ("arch.args.hidden=8", ["arch.args.hidden: unknown argument of X_UMX", "hidden_channels"]),
        ("dataset.train.args.seq_len=3", ["dataset.train.args.seq_len", "seq_duration"]),
        ("loss.args.mcoef=3", ["loss.args.mcoef", "mcoeff"]),
        ("device_augment.args.pitch=1", ["device_augment.args.pitch", "pitch_p"]),
    ],
)
def test_constructor_arguments_are_checked(override, expected):
    msg = _error(_raw("x_umx_mwf"), override)
    for text in expected:
        assert text in msg


def test_model_and_loss_must_fit():
    assert "use L1Loss" in _error(_raw("demucs_split"), "loss.type=CLoss")
    msg = _error(_raw("x_umx_mwf"), "trainer.time_domain=true")
    assert "trainer.time_domain" in msg and "spectral" in msg


def test_targets_must_be_the_four_sources():
    msg = _error(_raw("x_umx_mwf"), 'trainer.targets=["vocals", "drums"]')
    assert "trainer.targets" in msg and "drums, bass, other, vocals" in msg


def test_loss_and_trainer_stft_must_agree():
    assert "hop_length" in _error(_raw("x_umx_mwf"), "loss.args.hop_length=512")


# ---------------------------------------------------------------------------------------------------------------
# overrides and files


def test_parse_override_values_are_json_else_strings():
    assert parse_override("trainer.epochs=2") == (["trainer", "epochs"], 2)
    assert parse_override("name=my run") == (["name"], "my run")
    assert parse_override("lr_scheduler.args.milestones=[3, 5]") == (["lr_scheduler", "args", "milestones"], [3, 5])
    assert parse_override("trainer.grad_clip=null") == (["trainer", "grad_clip"], None)
    for bad in ("trainer.epochs", "=3", "trainer..epochs=3"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_overrides_apply_create_and_index():
    raw = _raw("x_umx_mwf")
    out = apply_overrides(
        raw,
        [
            "trainer.epochs=2",
            "dataset.train.args.samples_per_track=4",
            "lr_scheduler.args.milestones.0=1",
            "trainer.grad_clip=0.5",
        ],
    )
    assert out["trainer"]["epochs"] == 2 and out["dataset"]["train"]["args"]["samples_per_track"] == 4
    assert out["lr_scheduler"]["args"]["milestones"] == [1] and out["trainer"]["grad_clip"] == 0.5
    assert raw["trainer"]["epochs"] == 70  # the input is not modified
    cfg = validate_config(out)
    assert cfg["trainer"]["grad_clip"] == 0.5
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(raw, ["lr_scheduler.args.milestones.3=1"])
    with pytest.raises(ConfigError, match="not an object"):
        apply_overrides(raw, ["name.first=1"])


def test_defaults_are_filled_and_validation_is_idempotent():
    cfg = load_config(CONFIGS / "demucs_split.json")
    assert cfg["trainer"]["n_saved"] == 2 and cfg["trainer"]["grad_clip"] is None
    assert validate_config(cfg) == cfg


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        read_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "arch": }')
    with pytest.raises(ConfigError, match="line 2"):
        read_config(bad)
    with pytest.raises(ConfigError, match="JSON object"):
        validate_config([1, 2])


def test_validation_leaves_the_given_config_alone():
    """The config flows one way: validate_config returns a new dict and shares no mutable part with its input."""
    import copy

    raw = read_config(CONFIGS / "unet_attn.json")
    raw["device_augment"] = {"args": {"pitch_semitones": [0, 1]}}
    before = copy.deepcopy(raw)
    cfg = validate_config(raw)
    assert raw == before
    cfg["device_augment"]["args"]["pitch_semitones"].append(2)
    cfg["arch"]["args"]["extra"] = 1
    assert raw == before


# ---------------------------------------------------------------------------------------------------------------
# the typed config


def test_parse_config_keeps_the_typed_config_and_the_classes_of_its_names():
    from danna_sep.config import TrainConfig, parse_config
    from danna_sep.data.musdb import MUSDBDataset
    from danna_sep.losses import CombinationLoss

    raw = _raw("x_umx_mwf")
    cfg = parse_config(raw)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model_dump() == validate_config(raw)  # what checkpoints store
    assert cfg.trainer.epochs == 70 and cfg.optimizer.args["lr"] == 1e-4 and cfg.time_domain is False
    assert cfg.classes.loss is CombinationLoss and cfg.classes.train_set is MUSDBDataset  # CLoss, FastMUSDB
    assert parse_config(cfg) is cfg  # a checked config is not checked again
    assert validate_config(cfg) == cfg.model_dump()


def test_a_config_made_without_parse_config_has_no_classes():
    from danna_sep.config import TrainConfig, parse_config

    bare = TrainConfig.model_validate(_raw("demucs_split"))
    with pytest.raises(ConfigError, match="parse_config"):
        _ = bare.classes
    assert parse_config(bare).classes.model.__name__ == "DemucsSplit"


def test_moved_names_keep_their_old_import_path():
    from danna_sep.config import DATASETS, LOSSES, dataset_class, loss_class, optimizer_class, scheduler_names
    from danna_sep.train import build

    assert LOSSES is build.LOSSES and DATASETS is build.DATASETS and loss_class is build.loss_class
    assert dataset_class("FastMUSDB") is build.DATASETS["FastMUSDB"] and optimizer_class("Adam").__name__ == "Adam"
    assert "MultiStepLR" in scheduler_names()
