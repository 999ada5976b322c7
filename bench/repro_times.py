"""Time `dvc repro` per stage: runs it as a subprocess and timestamps each "Running stage" line.

Usage: python -m bench.repro_times [--out bench/out/repro_times.json] [-- extra dvc args]
Prints a Markdown table (stage, seconds) and the total, and writes the same as JSON.
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

STAGE = re.compile(r"Running stage '([^']+)'")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out/repro_times.json")
    ap.add_argument("cmd", nargs="*", default=["dvc", "repro"])
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    marks = []
    proc = subprocess.Popen(args.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        for part in line.replace("\r", "\n").splitlines():
            m = STAGE.search(part)
            if m:
                marks.append((m.group(1), time.perf_counter()))
                print(part, flush=True)
    rc = proc.wait()
    end = time.perf_counter()
    rows = [(name, (marks[i + 1][1] if i + 1 < len(marks) else end) - t) for i, (name, t) in enumerate(marks)]
    total = end - t0
    print("\n| stage | seconds |\n|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} |")
    print(f"| **total** (`{' '.join(args.cmd)}`, exit {rc}) | **{total:.1f}** |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cmd": args.cmd, "exit": rc, "total_s": total,
                                          "stages": [{"stage": n, "s": s} for n, s in rows]}, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
