"""Benchmark of `invoke build-box`: a build from scratch, then a rebuild on the cached base image.

Prints the wall time of each run, the time of its long steps (base image, packer build,
VMDK, packing) and the size of each box. Targets under TCG on 2 cores: from scratch <= 6 min,
rebuild <= 2 min, each compressed box <= 250 MB. Needs root (debootstrap). Not a test.

Usage (from the repo root): sudo .venv/bin/python -m bench.build_box [--rebuild-only]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

from box.run import stream
from box.sizes import UNITS, format_size

ROOT = Path(__file__).resolve().parents[1]
STEP_DONE = re.compile(r"^<== (.+): done in ([0-9.]+) s$")
TARGETS = {"scratch": 360.0, "rebuild": 120.0}
BOX_TARGET_MB = 250.0


def run_build(label: str) -> dict:
    """Run ./invoke build-box, its output echoed as it comes; return wall time and step times."""
    print(f"\n### {label}: ./invoke build-box --force", flush=True)
    start = time.monotonic()
    # --force: same inputs would otherwise reuse the last build and measure nothing
    proc = stream([str(ROOT / "invoke"), "build-box", "--force"], cwd=str(ROOT))
    if proc.returncode != 0:
        sys.exit(f"{label}: build-box failed (exit {proc.returncode})")
    steps: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        match = STEP_DONE.match(line.strip())
        if match:
            steps[match.group(1)] = float(match.group(2))
    return {"wall": time.monotonic() - start, "steps": steps}


def report(label: str, result: dict) -> None:
    wall = result["wall"]
    target = TARGETS[label]
    verdict = "ok" if wall <= target else "OVER TARGET"
    print(f"{label:8s} wall {wall:7.1f} s (target <= {target:.0f} s: {verdict})")
    for name, seconds in result["steps"].items():
        if seconds >= 1.0:
            print(f"           {seconds:7.1f} s  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild-only", action="store_true",
                        help="keep the cached base image: measure the rebuild alone")
    args = parser.parse_args()
    results = {}
    if not args.rebuild_only:
        shutil.rmtree(ROOT / "build" / "base", ignore_errors=True)
        results["scratch"] = run_build("scratch")
    results["rebuild"] = run_build("rebuild")

    print("\n### build-box benchmark (accelerator as probed; TCG on the build machines)")
    for label, result in results.items():
        report(label, result)
    meta = json.loads((ROOT / "dist" / "build.json").read_text())
    for box in meta["boxes"]:
        verdict = "ok" if box["size"] <= BOX_TARGET_MB * UNITS["MB"] else "OVER TARGET"
        print(f"box      {box['file']}: {format_size(box['size'])} (target <= {BOX_TARGET_MB:.0f} MB: "
              f"{verdict})")


if __name__ == "__main__":
    main()
