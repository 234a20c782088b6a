"""How long the paper recipes take at SCALE=tiny, and `make demo`, on this machine (README's numbers).

    python benchmarks/recipes_tiny.py                      # every paper recipe, no LAUNCH, then the demo
    python benchmarks/recipes_tiny.py --launch torchrun    # the same under a two-process torchrun
    python benchmarks/recipes_tiny.py --only demo

Each run starts in a fresh directory; the wall time, the number of stages, the slowest stages (from
the recipes' own "# done in N s" lines) and the report's same-direction count are written to
results/recipes_tiny[_LAUNCH]_cpu.json. Run it on a quiet machine: the stages are short processes, and
most of their time is starting Python and importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["reward_collapse.sh", "pm_rlhf.sh", "metarm_rounds.sh", "uncertainty_rlhf.sh", "secrets_rm.sh"]
LAUNCHES = {"torchrun": "torchrun --nproc_per_node 2 -m"}


def run(script: str, out: Path, launch: str | None) -> dict:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OUT=str(out), SCALE="tiny")
    if launch:
        env["LAUNCH"] = LAUNCHES[launch]
    t0 = time.time()
    p = subprocess.run(["bash", str(ROOT / "recipes" / script)], env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.time() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"{script} failed with status {p.returncode}")
    lines = p.stderr.splitlines()
    stages, open_stages = [], []  # a nested recipe's stages finish inside the stage that runs it
    for line in lines:
        m = re.match(r"# done in (\d+) s", line)
        if line.startswith("+ ") and not line.endswith("skipped"):
            open_stages.append(" ".join(line[2:].split()[:3]))
        elif m and open_stages:
            stages.append((int(m.group(1)), open_stages.pop()))
    result = {"seconds": round(seconds, 1), "stages": len(stages),
              "slowest_stages": [{"seconds": s, "stage": c} for s, c in sorted(stages, reverse=True)[:5]]}
    summary = out / "summary.json"
    if summary.exists():
        result["same_direction"] = json.loads(summary.read_text())["same_direction"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launch", choices=sorted(LAUNCHES))
    ap.add_argument("--only", nargs="*", help="recipe file names, or 'demo'")
    args = ap.parse_args()
    names = args.only or [*RECIPES, *([] if args.launch else ["demo"])]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            script = "demo.sh" if name == "demo" else name
            results[name] = run(script, Path(tmp) / name, None if name == "demo" else args.launch)
            print(json.dumps({name: results[name]}), flush=True)
    path = ROOT / "benchmarks" / "results" / f"recipes_tiny{'_' + args.launch if args.launch else ''}_cpu.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    record = {"command": "python benchmarks/recipes_tiny.py" + (f" --launch {args.launch}" if args.launch else ""),
              "cores": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d"), "runs": {**previous.get("runs", {}),
                                                                                                    **results}}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
