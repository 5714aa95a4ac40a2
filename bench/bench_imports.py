"""Cold import time of each function module in a fresh interpreter, next to boto3 alone.

The dev venv holds every layer's packages; in Lambda only the WADO functions get the
PixelLayer (numpy, Pillow, imagecodecs). pydicom imports numpy whenever it can, so for the
other functions those packages are made unimportable here, as they are in their Lambda.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 9
PIXEL_PACKAGES = ("numpy", "PIL", "imagecodecs")


def _pixel_layer_functions() -> set[str]:
    """Code folder names of the functions whose Layers include the PixelLayer."""
    from local.template import load_yaml

    resources = load_yaml(ROOT / "template.yaml")["Resources"]
    found = set()
    for resource in resources.values():
        props = resource.get("Properties", {})
        layers = [layer.get("Ref") for layer in props.get("Layers", []) if isinstance(layer, dict)]
        if resource.get("Type") == "AWS::Serverless::Function" and "PixelLayer" in layers:
            found.add(Path(str(props["CodeUri"])).name)
    return found


def _median_seconds(code: str) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> dict[str, float]:
    """Median wall time of each import, interpreter start-up subtracted (ms)."""
    baseline = _median_seconds("pass")
    targets = {"boto3": "import boto3"}
    with_pixels = _pixel_layer_functions()
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        name = app.parent.name
        block = (
            "pass"
            if name in with_pixels
            else f"sys.modules.update(dict.fromkeys({PIXEL_PACKAGES!r}))"
        )
        targets[f"functions/{name}"] = (
            f"import sys; {block}; sys.path.insert(0, {str(ROOT)!r}); "
            f"import runpy; runpy.run_path({str(app)!r})"
        )
    # paid once per container by the first render or transcode (imported lazily)
    targets["shared.dicom render+transcode"] = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "import shared.dicom.render, shared.dicom.transcode"
    )
    results = {name: (_median_seconds(code) - baseline) * 1000 for name, code in targets.items()}
    boto3_ms = results["boto3"]
    print("\ncold import (fresh interpreter, median of", RUNS, "runs, start-up subtracted)")
    for name, ms in results.items():
        print(f"  {name:24s} {ms:7.1f} ms   {ms / boto3_ms:4.2f}x boto3")
    return {name: round(ms, 1) for name, ms in results.items()} | {
        f"{name}_ratio_to_boto3": round(ms / boto3_ms, 2) for name, ms in results.items()
    }
