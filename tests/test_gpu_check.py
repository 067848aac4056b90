"""benchmarks/gpu_check.py (issue 19's device check) stays runnable: its quick CPU mode runs every part."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def numbers(value):
    """Every number (not bool) inside a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


def test_wrapper_parses():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", str(REPO / "benchmarks" / "gpu_check.sh")], check=True)


def test_quick_cpu_run_reports_every_part(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,  # 24 s on an idle 2-core machine; a loaded one has taken over 90
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and (tmp_path / "gpu_check.txt").read_text().rstrip().endswith("all parts ok")
    parts = report["parts"]
    assert set(parts) == {"inference", "train", "torchrun"}
    assert all(p["ok"] for p in parts.values())

    inference = parts["inference"]["runs"]
    assert [r["precision"] for r in inference] == ["fp32", "fp16", "bf16"]
    for r in inference:
        assert r["seconds"] > 0 and r["x_realtime"] > 0 and r["peak_gib"] > 0
    for r in inference[1:]:
        assert set(r["sdr_vs_fp32_db"]) == {"drums", "bass", "other", "vocals"}
        assert r["lossy"] == (r["min_sdr_db"] < 40)

    train = parts["train"]["runs"]
    assert {(r["config"], r["amp_dtype"]) for r in train} == {
        (c, d) for c in ("x_umx_mwf", "unet_attn", "demucs_split") for d in ("float16", "bfloat16")
    }
    assert all(r["step_s"] > 0 and r["timed_steps"] >= 1 for r in train)

    torchrun = parts["torchrun"]
    assert torchrun["rc"] == 0 and torchrun["saved"]

    values = list(numbers(parts))
    assert values and all(math.isfinite(v) for v in values)
