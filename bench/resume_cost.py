"""Work redone after a crash: kill -9 an L-level trajectory during level k, restart it, count what was retrained.

Compared with the obvious alternative (restarting the trajectory from scratch), which redoes levels 0..k.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from common import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE = os.path.join(os.path.dirname(REPO), "shared", "data", "glue")


def command(out: str, levels: int, samples: int) -> list[str]:
    """The `python -m tickets imp` command of the benchmark trajectory (tiny random BERT, real SST-2)."""
    return [sys.executable, "-m", "tickets", "imp", "--task", "sst2", "--data-dir", GLUE, "--model", "tiny-random-bert",
            "--levels", str(levels), "--rate", "0.2", "--max-train-samples", str(samples), "--max-eval-samples", "64",
            "--max-seq-length", "32", "--batch-size", "8", "--no-progress", "--out", out]


def level_metrics(out: str, level: int) -> dict | None:
    """metrics.json of a finished level, or None."""
    path = os.path.join(out, f"level_{level:02d}", "metrics.json")
    return json.load(open(path)) if os.path.isfile(path) else None


def main() -> None:
    """Crash during level k, restart, and print what was recomputed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, default=4, help="last level L")
    parser.add_argument("--crash-level", type=int, default=3, help="level k during which the process is killed")
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "traj")
        proc = subprocess.Popen(command(out, args.levels, args.samples), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while level_metrics(out, args.crash_level - 1) is None:
            if proc.poll() is not None:
                raise SystemExit("the trajectory ended before the crash point")
            time.sleep(0.2)
        previous = level_metrics(out, args.crash_level - 1)
        time.sleep(previous["wall_time_s"] / 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        crashed_at = time.time()
        lost = crashed_at - previous["finished_at"]
        before = {lv: level_metrics(out, lv)["started_at"] for lv in range(args.crash_level)}
        subprocess.run(command(out, args.levels, args.samples), cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = {lv: level_metrics(out, lv) for lv in range(args.levels + 1)}
    recomputed = [lv for lv, start in before.items() if after[lv]["started_at"] != start]
    level_time = sum(m["wall_time_s"] for m in after.values()) / len(after)
    redone_levels = lost / level_time
    scratch_levels = args.crash_level + redone_levels
    print(f"machine: {machine()}")
    print(f"trajectory levels 0..{args.levels}, killed (SIGKILL) halfway through level {args.crash_level}")
    print(f"{'':<34} {'levels':>8}")
    print(f"{'finished levels recomputed':<34} {len(recomputed):8d}")
    print(f"{'work redone on restart (ours)':<34} {redone_levels:8.2f}")
    print(f"{'work redone restarting from scratch':<34} {scratch_levels:8.2f}")
    print(f"headline: redone after a crash at level {args.crash_level}: {redone_levels:.2f} levels "
          f"(the interrupted part of level {args.crash_level}) vs {scratch_levels:.2f} from scratch")


if __name__ == "__main__":
    main()
