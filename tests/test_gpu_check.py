"""benchmarks/gpu_check.py, the command a GPU session runs first, cannot rot: its CPU dry run (tiny
shapes) goes through every run, check, the sharded engines (through tests/sharded_cpu.py) and the TRL
comparison and writes the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_a_passing_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=1200, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed"] == [] and set(report["runs"]) == {"1b-full", "1b-lora", "7b-lora"}
    for run in report["runs"].values():
        assert run["checks"] == {"fp32_masters": True, "ratio_one_at_old_policy": True}
        assert run["best_step"]["step_seconds"] > 0 and "generate" in run["phase_share"]
    assert report["runs"]["1b-lora"]["trainable_parameters"] < report["runs"]["1b-full"]["trainable_parameters"]
    assert report["train_rm_vs_trl"]["speed_ratio"] > 0
    # ppo under ZeRO-3 and FSDP2, one process each, bf16: the ratio through the engine's own forward
    assert set(report["sharded"]) == {"zero3", "fsdp"}
    for config, engine in (("zero3", "DEEPSPEED-ZeRO3"), ("fsdp", "FSDP2")):
        run = report["sharded"][config]
        assert run["checks"] == {"ran": True, "ratio_one_at_old_policy": True, "fp32_saved": True}, run
        assert run["engine"] == engine and run["step1_approx_kl"] <= 1e-4 and run["saved_dtypes"] == ["F32"]
