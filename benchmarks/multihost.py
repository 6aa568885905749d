"""What splitting a sweep over processes costs: the same `pderl-jax sweep` in one process and in N.

Both runs start from an empty compilation cache and are timed one after the other (never at the
same time), on 127.0.0.1 with CPU collectives through gloo. On one machine the N processes share
its cores, so this measures the overhead of the multi-process machinery (start-up, per-process
compilation, gathering the metrics every generation), not a speed-up: that needs N hosts.

    python benchmarks/multihost.py --processes 2 --env hopper --backend brax --seeds 0..3 --frames 6000

Writes benchmarks/results/multihost.json (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(args, processes: int, out: Path) -> dict:
    """Run the sweep in `processes` processes; its summary.json and the wall time of the whole command."""
    command = [sys.executable, "-m", "pderl_jax.cli", "sweep", "--env", args.env, "--backend", args.backend,
               "--seeds", args.seeds, "--frames", str(args.frames), "--out", str(out), "--no-progress",
               "--set", *args.set]
    env = {**os.environ, "PDERL_JAX_CACHE_DIR": ""}  # a user's first run: no persistent cache
    start = time.perf_counter()
    if processes == 1:
        group = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)]
    else:
        port = free_port()
        group = [subprocess.Popen([*command, "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                                   str(processes), "--process-id", str(i)], env=env, stdout=subprocess.DEVNULL)
                 for i in range(processes)]
    codes = [p.wait() for p in group]
    wall = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"the {processes}-process sweep failed: exit statuses {codes}")
    summary = json.loads((out / "summary.json").read_text())
    return {"processes": processes, "command_wall_s": round(wall, 1), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--backend", default="brax")
    parser.add_argument("--seeds", default="0..3")
    parser.add_argument("--frames", type=int, default=6000)
    parser.add_argument("--set", nargs="*", default=["evolution.pop_size=4"])
    parser.add_argument("--out", type=Path, default=RESULTS / "multihost.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [sweep(args, n, Path(folder) / f"p{n}") for n in (1, args.processes)]
    one, many = rows
    report = {"command": " ".join(sys.argv), "env": args.env, "backend": args.backend, "seeds": args.seeds,
              "frames": args.frames, "set": args.set, "cpu_cores": os.cpu_count(), "rows": rows,
              "wall_ratio": round(many["command_wall_s"] / one["command_wall_s"], 2),
              "compile_ratio": round(many["compile_s"] / one["compile_s"], 2),
              "frames_per_s_ratio": round(many["frames_per_s"] / one["frames_per_s"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("| processes | command wall s | sweep wall s | compile s | frames/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['command_wall_s']} | {r['wall_s']} | {r['compile_s']} | {r['frames_per_s']} |")
    print(f"{args.processes} processes / 1: wall x{report['wall_ratio']}, compile x{report['compile_ratio']}, "
          f"frames/s x{report['frames_per_s_ratio']}; written: {args.out}")


if __name__ == "__main__":
    main()
