"""Compare pixel codecs for the DicomLayer: ``python -m bench.bench_codecs [--repeat N]``.

Candidates: pylibjpeg (+ pylibjpeg-openjpeg, pylibjpeg-rle), imagecodecs, python-gdcm, plus
Pillow (needed anyway for rendered JPEG output). Measures, for docs/decisions/0004-codecs.md:

1. decode coverage of every transfer syntax in the pydicom + pydicom-data test files, with
   pixel checks (lossless: equal to the other decoders and to the uncompressed reference file);
2. encode capability for the transcoder targets (JPEG Baseline, JPEG Lossless SV1, JPEG 2000
   lossless) with lossless round trips decoded by another library, SOF3/predictor check of the
   SV1 stream and, when dcmtk is installed, ``dcmdjpeg`` on the wrapped stream;
3. licences and unzipped size of each wheel cross-installed for Lambda (python3.13, arm64);
4. speed (medians) of the decodes and encodes the WADO-URI renderer and transcoder need.

The candidates are not project dependencies: unless they are importable already, the script
creates a scratch venv (default /tmp/bench-codecs-venv) with pinned versions and re-runs itself
there. Results are printed as Markdown tables and written to bench/results/codecs.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

PINS = [
    "pydicom==3.0.2",
    "pydicom-data==1.0.0",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "pylibjpeg==2.1.0",
    "pylibjpeg-openjpeg==2.6.0",
    "pylibjpeg-rle==2.2.0",
    "imagecodecs==2026.3.6",
    "python-gdcm==3.2.6",
]
CANDIDATE_MODULES = ("pylibjpeg", "openjpeg", "rle", "imagecodecs", "gdcm", "PIL")
LAMBDA_PIP = [
    "--platform",
    "manylinux_2_28_aarch64",
    "--platform",
    "manylinux2014_aarch64",
    "--implementation",
    "cp",
    "--python-version",
    "3.13",
    "--only-binary=:all:",
]
RESULTS = Path(__file__).parent / "results" / "codecs.json"
DECODERS = ("pydicom", "pylibjpeg", "gdcm", "imagecodecs", "pillow")

# (file, uncompressed reference file or "")
CORPUS = [
    ("MR_small.dcm", ""),
    ("MR_small_implicit.dcm", "MR_small.dcm"),
    ("MR_small_bigendian.dcm", "MR_small.dcm"),
    ("image_dfl.dcm", ""),
    ("emri_small_big_endian.dcm", "emri_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("emri_small_RLE.dcm", "emri_small.dcm"),
    ("SC_rgb_rle_16bit_2frame.dcm", "SC_rgb_16bit_2frame.dcm"),
    ("SC_rgb_jpeg_dcmtk.dcm", ""),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", ""),
    ("SC_jpeg_no_color_transform.dcm", ""),
    ("color3d_jpeg_baseline.dcm", ""),
    ("JPGExtended.dcm", ""),
    ("JPEG-lossy.dcm", ""),
    ("JPEG-LL.dcm", ""),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", ""),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("JPEGLSNearLossless_08.dcm", ""),
    ("JPEGLSNearLossless_16.dcm", ""),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
    ("693_J2KR.dcm", "693_UNCR.dcm"),
    ("693_J2KI.dcm", "693_UNCI.dcm"),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),
    ("RG1_J2KI.dcm", "RG1_UNCI.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),
    ("US1_J2KI.dcm", "US1_UNCI.dcm"),
    ("GDCMJ2K_TextGBR.dcm", ""),
]
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
LOSSY |= {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}


class NotCovered(Exception):
    """The library has no decoder/encoder for this case (reported as n/a, not a failure)."""


# --------------------------------------------------------------------------- environment


def _have_candidates() -> bool:
    for name in (*CANDIDATE_MODULES, "pydicom", "data_store"):
        try:
            importlib.import_module(name)
        except ImportError:
            return False
    return True


def _ensure_venv(venv: Path, argv: list[str]) -> None:
    """Create the scratch venv with the pinned candidates and re-run this module in it."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with {' '.join(PINS)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
        check=True,
    )
    root = Path(__file__).resolve().parent.parent
    cmd = [str(python), "-m", "bench.bench_codecs", "--no-venv", *argv]
    raise SystemExit(subprocess.run(cmd, cwd=root, check=False).returncode)


def _available() -> dict[str, bool]:
    have = {"pydicom": True}
    for label, module in (
        ("pylibjpeg", "openjpeg"),
        ("gdcm", "gdcm"),
        ("imagecodecs", "imagecodecs"),
        ("pillow", "PIL"),
    ):
        try:
            importlib.import_module(module)
            have[label] = True
        except ImportError:
            print(f"skipping {label}: {module} is not importable")
            have[label] = False
    return have


def _path(name: str) -> Path:
    """Test file from pydicom's own test files or pydicom-data, without network downloads."""
    import data_store
    import pydicom

    for folder in (
        Path(pydicom.__file__).parent / "data" / "test_files",
        Path(data_store.__file__).parent / "data",
    ):
        hits = sorted(folder.rglob(name))
        if hits:
            return hits[0]
    raise FileNotFoundError(name)


def _read(name: str) -> Any:
    from pydicom import dcmread

    return dcmread(_path(name))


def _frames(ds: Any) -> list[bytes]:
    from pydicom.encaps import generate_frames

    n = int(ds.get("NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=n))


# --------------------------------------------------------------------------- decoding


def _decode_imagecodecs(ds: Any) -> Any:
    """Our own glue: feed each frame to the imagecodecs decoder for the transfer syntax."""
    import imagecodecs
    import numpy as np

    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"):
        decode = imagecodecs.jpeg8_decode
        frame = _frames(ds)[0]
        if str(ds.PhotometricInterpretation) == "RGB" and b"JFIF" not in frame[:64]:
            # as pydicom: no YCbCr->RGB transform for a stream DICOM says is RGB
            def decode(f: bytes) -> Any:
                return imagecodecs.jpeg8_decode(f, colorspace="RGB", outcolorspace="RGB")
    elif ts in ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"):
        decode = imagecodecs.jpeg8_decode  # libjpeg-turbo 3 decodes SOF3 of 2..16 bits
    elif ts in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
        decode = imagecodecs.jpegls_decode
    elif ts in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        decode = imagecodecs.jpeg2k_decode
    elif ts.startswith("1.2.840.10008.1.2.4.20"):
        decode = imagecodecs.htj2k_decode
    else:
        raise NotCovered("no imagecodecs glue (pydicom's native decoder serves)")
    frames = [decode(f) for f in _frames(ds)]
    arr = np.stack(frames) if len(frames) > 1 else frames[0]
    return _fix_dtype(arr, ds)


def _fix_dtype(arr: Any, ds: Any) -> Any:
    """Match pydicom's output dtype and sign (codecs return the stream's own sample type)."""
    import numpy as np

    bits = int(ds.BitsAllocated)
    signed = int(ds.PixelRepresentation) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(bits, 8) // 8}")
    if arr.dtype == dtype:
        return arr
    if signed and arr.dtype.kind == "u":
        stored = int(ds.BitsStored)
        arr = arr.astype(np.int64)
        arr = np.where(arr >= 1 << (stored - 1), arr - (1 << stored), arr)
    return arr.astype(dtype)


def decode(ds: Any, library: str) -> Any:
    from pydicom.pixels import pixel_array

    ts = ds.file_meta.TransferSyntaxUID
    if library == "imagecodecs":
        return _decode_imagecodecs(ds)
    if not ts.is_compressed:
        return pixel_array(ds)  # native: no plugin involved, same for every column
    if library == "pydicom" and ts != "1.2.840.10008.1.2.5":
        raise NotCovered("no pydicom-native decoder")
    plugin = library
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixel_array(ds, decoding_plugin=plugin)


def _short(exc: BaseException) -> str:
    if isinstance(exc, NotCovered):
        return "n/a"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "plugin" in text and ("missing" in text.lower() or "no" in text.lower()):
        return "no plugin"
    return text[:60]


def _equal(a: Any, b: Any) -> tuple[bool, int]:
    import numpy as np

    if a.shape != b.shape:
        return False, -1
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return bool((diff == 0).all()), int(diff.max())


def _coverage_row(name: str, ref_name: str, have: dict[str, bool]) -> dict[str, Any]:
    ds = _read(name)
    ts = str(ds.file_meta.TransferSyntaxUID)
    outs: dict[str, Any] = {}
    row: dict[str, Any] = {"file": name, "ts": ts, "frames": int(ds.get("NumberOfFrames", 1) or 1)}
    for lib in DECODERS:
        if not have[lib]:
            row[lib] = "not installed"
            continue
        try:
            outs[lib] = decode(ds, lib)
        except Exception as exc:  # noqa: BLE001 -- every failure is a table cell
            row[lib] = "n/a" if isinstance(exc, NotCovered) else f"FAIL: {_short(exc)}"
    reference = None
    if ref_name:
        reference = _read(ref_name).pixel_array
        row["reference"] = ref_name
    elif outs:
        # consensus: the decode most others agree with
        reference = max(outs.values(), key=lambda a: sum(_equal(a, b)[0] for b in outs.values()))
        row["reference"] = "consensus"
    for lib, arr in outs.items():
        same, maxdiff = _equal(arr, reference)
        if same:
            row[lib] = "ok"
        elif maxdiff < 0:
            row[lib] = f"shape {arr.shape} != {reference.shape}"
        elif ts in LOSSY:
            row[lib] = f"ok (lossy, max diff {maxdiff})"
        else:
            row[lib] = f"DIFF max {maxdiff}"
    return row


def coverage(have: dict[str, bool]) -> list[dict[str, Any]]:
    rows = []
    for name, ref in CORPUS:
        try:
            rows.append(_coverage_row(name, ref, have))
        except FileNotFoundError:
            print(f"missing test file {name}")
    rows.extend(_synthetic_rows(have))
    return rows


def _synthetic_rows(have: dict[str, bool]) -> list[dict[str, Any]]:
    """Files for syntaxes the corpus lacks: Process 14 (.57, predictor 6) made by dcmtk's
    dcmcjpeg, HTJ2K lossless (.201) made by imagecodecs (OpenJPH)."""
    import numpy as np

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="codecs-"))
    src = _path("MR_small.dcm")
    dcmcjpeg = shutil.which("dcmcjpeg")
    if dcmcjpeg:
        out = tmp / "p14_pred6.dcm"
        subprocess.run([dcmcjpeg, "+el", "+sv", "6", str(src), str(out)], check=True)
        rows.append(_row_from_file(out, "MR_small.dcm (dcmcjpeg +el +sv 6)", have))
    if have["imagecodecs"]:
        import imagecodecs
        from pydicom.encaps import encapsulate

        ds = _read("MR_small.dcm")
        arr = ds.pixel_array
        stream = imagecodecs.htj2k_encode(arr, reversible=True)
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"
        out = tmp / "htj2k.dcm"
        ds.save_as(out, enforce_file_format=True)
        rows.append(_row_from_file(out, "MR_small.dcm (imagecodecs htj2k_encode)", have))
        del np
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _row_from_file(path: Path, label: str, have: dict[str, bool]) -> dict[str, Any]:
    from pydicom import dcmread

    ds = dcmread(path)
    ref = _read("MR_small.dcm").pixel_array
    row: dict[str, Any] = {"file": label, "ts": str(ds.file_meta.TransferSyntaxUID), "frames": 1}
    row["reference"] = "MR_small.dcm"
    for lib in DECODERS:
        if not have[lib]:
            row[lib] = "not installed"
            continue
        try:
            same, maxdiff = _equal(decode(ds, lib), ref)
            row[lib] = "ok" if same else f"DIFF max {maxdiff}"
        except Exception as exc:  # noqa: BLE001
            row[lib] = f"FAIL: {_short(exc)}"
    return row


# --------------------------------------------------------------------------- encoding


def _images() -> dict[str, tuple[Any, Any]]:
    """name -> (dataset, array) of the encode inputs."""
    import numpy as np

    ct = _read("693_UNCI.dcm")
    mr = _read("MR_small.dcm")
    rgb = _read("US1_UNCI.dcm")
    rgb_arr = rgb.pixel_array
    if "YBR" in str(rgb.PhotometricInterpretation):
        from pydicom.pixels import convert_color_space

        rgb_arr = convert_color_space(rgb_arr, str(rgb.PhotometricInterpretation), "RGB")
        rgb.PhotometricInterpretation = "RGB"
    g16 = _read("RG1_UNCI.dcm")
    g8_arr = (g16.pixel_array >> 7).astype(np.uint8)  # 15-bit CR to 8 bits
    return {
        "CT 512x512 int16": (ct, ct.pixel_array),
        "MR 64x64 int16": (mr, mr.pixel_array),
        "CR 1841x1955 uint16 (15-bit)": (g16, g16.pixel_array),
        "CR 1841x1955 uint8": (g16, g8_arr),
        "US 640x480 RGB uint8": (rgb, rgb_arr),
    }


def _sof_sos(stream: bytes) -> dict[str, int]:
    """Parse the JPEG markers: SOF type, precision, and the first scan's Ss (predictor), Al."""
    info: dict[str, int] = {}
    i = 2
    while i + 4 <= len(stream):
        if stream[i] != 0xFF:
            i += 1
            continue
        marker = stream[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(stream[i + 2 : i + 4], "big")
        seg = stream[i + 4 : i + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            info["sof"] = marker - 0xC0
            info["precision"] = seg[0]
            info["components"] = seg[5]
        if marker == 0xDA:
            ns = seg[0]
            info["ss"] = seg[1 + 2 * ns]
            info["al"] = seg[3 + 2 * ns] & 0x0F
            return info
        i += 2 + length
    return info


def _wrap(ds: Any, arr: Any, streams: list[bytes], ts: str, photometric: str = "") -> Any:
    """A copy of ds carrying the encoded frame(s) under transfer syntax ts."""
    import copy

    from pydicom.encaps import encapsulate

    out = copy.deepcopy(ds)
    out.PixelData = encapsulate(streams)
    out["PixelData"].VR = "OB"
    out.file_meta.TransferSyntaxUID = ts
    bits = arr.dtype.itemsize * 8
    out.BitsAllocated = bits
    out.BitsStored = int(ds.BitsStored) if bits == int(ds.BitsAllocated) else bits
    out.HighBit = out.BitsStored - 1
    out.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    out.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    if photometric:
        out.PhotometricInterpretation = photometric
    elif out.SamplesPerPixel == 1:
        out.PhotometricInterpretation = "MONOCHROME2"
    if out.SamplesPerPixel == 3:
        out.PlanarConfiguration = 0
    for tag in ("NumberOfFrames", "LossyImageCompression"):
        if tag in out:
            del out[tag]
    return out


def _gdcm_transcode(ds: Any, arr: Any, ts: str) -> bytes:
    """Encode with gdcm.ImageChangeTransferSyntax (write native, transcode, read frame back)."""
    import gdcm
    from pydicom.uid import ExplicitVRLittleEndian

    native = _native(ds, arr)
    native.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        native.save_as(src, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        if not reader.Read():
            raise RuntimeError("gdcm could not read the native file")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(ts)))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("gdcm ImageChangeTransferSyntax failed")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("gdcm could not write")
        from pydicom import dcmread

        return _frames(dcmread(dst))[0]


def _native(ds: Any, arr: Any) -> Any:
    import copy

    from pydicom.uid import ExplicitVRLittleEndian

    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out.PixelData = arr.tobytes()
    out["PixelData"].VR = "OW" if arr.dtype.itemsize > 1 else "OB"
    out.BitsAllocated = arr.dtype.itemsize * 8
    out.BitsStored = int(ds.BitsStored) if out.BitsAllocated == int(ds.BitsAllocated) else 8
    out.HighBit = out.BitsStored - 1
    out.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    out.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    out.PhotometricInterpretation = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    if arr.ndim == 3:
        out.PlanarConfiguration = 0
    for tag in ("NumberOfFrames", "LossyImageCompression"):
        if tag in out:
            del out[tag]
    return out


def _encoders(have: dict[str, bool]) -> dict[str, dict[str, Callable[[Any, Any], bytes]]]:
    """target -> library -> encode(ds, arr) -> one frame's stream."""
    enc: dict[str, dict[str, Callable[[Any, Any], bytes]]] = {"baseline": {}, "sv1": {}, "j2k": {}}
    if have["imagecodecs"]:
        import imagecodecs

        enc["baseline"]["imagecodecs"] = lambda ds, a: bytes(imagecodecs.jpeg8_encode(a, 90))

        def _ljpeg(ds: Any, a: Any) -> bytes:
            bits = int(ds.BitsStored) if a.dtype.itemsize == 2 else 8
            if a.dtype.kind == "i":  # DICOM keeps the two's complement bit pattern
                a = a.view(a.dtype.str.replace("i", "u")) & ((1 << bits) - 1)
            rgb = "RGB" if a.ndim == 3 else None
            return bytes(
                imagecodecs.jpeg8_encode(
                    a,
                    lossless=True,
                    predictor=1,
                    bitspersample=bits,
                    colorspace=rgb,
                    outcolorspace=rgb,
                )
            )

        enc["sv1"]["imagecodecs"] = _ljpeg
        enc["j2k"]["imagecodecs"] = lambda ds, a: bytes(
            imagecodecs.jpeg2k_encode(a, codecformat="J2K", reversible=True, mct=a.ndim == 3)
        )
    if have["pylibjpeg"]:
        from pydicom.uid import JPEG2000Lossless

        def _openjpeg(ds: Any, a: Any) -> bytes:
            out = _native(ds, a)
            out.compress(JPEG2000Lossless, a, encoding_plugin="pylibjpeg", use_mct=a.ndim == 3)
            return _frames(out)[0]

        enc["j2k"]["pylibjpeg"] = _openjpeg
    if have["gdcm"]:
        enc["baseline"]["gdcm"] = lambda ds, a: _gdcm_transcode(ds, a, "1.2.840.10008.1.2.4.50")
        enc["sv1"]["gdcm"] = lambda ds, a: _gdcm_transcode(ds, a, "1.2.840.10008.1.2.4.70")
        enc["j2k"]["gdcm"] = lambda ds, a: _gdcm_transcode(ds, a, "1.2.840.10008.1.2.4.90")
    if have["pillow"]:
        from PIL import Image

        def _pillow(ds: Any, a: Any) -> bytes:
            if a.dtype.itemsize != 1:
                raise ValueError("Pillow JPEG is 8-bit only")
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=90)
            return buf.getvalue()

        enc["baseline"]["pillow"] = _pillow
    return enc


TARGETS = {
    "baseline": ("1.2.840.10008.1.2.4.50", ["CR 1841x1955 uint8", "US 640x480 RGB uint8"]),
    "sv1": (
        "1.2.840.10008.1.2.4.70",
        [
            "CR 1841x1955 uint8",
            "CR 1841x1955 uint16 (15-bit)",
            "CT 512x512 int16",
            "US 640x480 RGB uint8",
        ],
    ),
    "j2k": ("1.2.840.10008.1.2.4.90", ["CT 512x512 int16", "US 640x480 RGB uint8"]),
}


def _dcmdjpeg_check(wrapped: Any, arr: Any) -> str:
    dcmdjpeg = shutil.which("dcmdjpeg")
    if not dcmdjpeg:
        return "dcmdjpeg not installed"
    from pydicom import dcmread

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "c.dcm", Path(tmp) / "d.dcm"
        wrapped.save_as(src, enforce_file_format=True)
        proc = subprocess.run(
            [dcmdjpeg, "+cn", str(src), str(dst)], capture_output=True, text=True, check=False
        )
        if proc.returncode:
            return f"dcmdjpeg FAIL: {proc.stderr.strip()[:60]}"
        same, maxdiff = _equal(dcmread(dst).pixel_array, arr)
        return "dcmdjpeg equal" if same else f"dcmdjpeg DIFF {maxdiff}"


def encoding(have: dict[str, bool]) -> list[dict[str, Any]]:
    images = _images()
    rows = []
    for target, libs in _encoders(have).items():
        ts, inputs = TARGETS[target]
        for image in inputs:
            ds, arr = images[image]
            for lib, fn in libs.items():
                rows.append(_encode_row((target, ts, image), ds, arr, (lib, fn), have))
    return rows


def _encode_row(
    case: tuple[str, str, str],
    ds: Any,
    arr: Any,
    encoder: tuple[str, Callable[[Any, Any], bytes]],
    have: dict[str, bool],
) -> dict[str, Any]:
    target, ts, image = case
    lib, fn = encoder
    row: dict[str, Any] = {"target": target, "image": image, "library": lib}
    try:
        stream = fn(ds, arr)
    except Exception as exc:  # noqa: BLE001
        row["result"] = f"FAIL: {_short(exc)}"
        return row
    row["bytes"] = len(stream)
    row["ratio"] = round(arr.nbytes / len(stream), 2)
    checks = []
    if target != "j2k":
        markers = _sof_sos(stream)
        row["markers"] = markers
        if target == "sv1":
            sv1 = markers.get("sof") == 3 and markers.get("ss") == 1 and markers.get("al") == 0
            checks.append("SOF3 Ss=1 Al=0" if sv1 else f"NOT SV1 {markers}")
    photometric = "YBR_FULL_422" if target == "baseline" and arr.ndim == 3 else ""
    wrapped = _wrap(ds, arr, [stream], ts, photometric)
    for other in DECODERS:
        if other in (lib, "pydicom") or not have[other]:
            continue
        try:
            out = decode(wrapped, other)
        except Exception as exc:  # noqa: BLE001
            checks.append(f"{other}: FAIL {_short(exc)}")
            continue
        same, maxdiff = _equal(out, arr)
        if target == "baseline":
            checks.append(f"{other}: max diff {maxdiff}")
        else:
            checks.append(f"{other}: {'equal' if same else f'DIFF {maxdiff}'}")
    if target == "sv1":
        checks.append(_dcmdjpeg_check(wrapped, arr))
    row["result"] = "; ".join(checks)
    return row


# --------------------------------------------------------------------------- licences, size

SIZE_SETS = {
    "numpy": ["numpy"],
    "pillow": ["pillow"],
    "pydicom": ["pydicom"],
    "pylibjpeg": ["pylibjpeg"],
    "pylibjpeg-openjpeg": ["pylibjpeg-openjpeg"],
    "pylibjpeg-rle": ["pylibjpeg-rle"],
    "imagecodecs": ["imagecodecs"],
    "python-gdcm": ["python-gdcm"],
    "pylibjpeg-libjpeg (GPL, excluded)": ["pylibjpeg-libjpeg"],
}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def sizes_and_licences() -> list[dict[str, Any]]:
    rows = []
    base = Path(tempfile.mkdtemp(prefix="codecs-lambda-"))
    for label, pkgs in SIZE_SETS.items():
        target = base / label.split()[0]
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        cmd += ["--no-compile", "--no-deps", *LAMBDA_PIP, "--target", str(target), *pkgs]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        row: dict[str, Any] = {"package": label}
        if proc.returncode:
            row["error"] = proc.stderr.strip().splitlines()[-1][:80]
            rows.append(row)
            continue
        row["mb"] = round(_du(target) / 1e6, 1)
        row.update(_licence(target))
        rows.append(row)
    shutil.rmtree(base, ignore_errors=True)
    return rows


def _licence(target: Path) -> dict[str, Any]:
    meta = next(target.glob("*.dist-info/METADATA"))
    info: dict[str, Any] = {"version": ""}
    classifiers = []
    for line in meta.read_text(errors="replace").splitlines():
        if not line:
            break
        key, _, value = line.partition(": ")
        if key == "Version":
            info["version"] = value
        elif key in ("License", "License-Expression"):
            info["licence"] = value.strip()
        elif key == "Classifier" and value.startswith("License ::"):
            classifiers.append(value.rsplit(" :: ", 1)[-1])
    if "licence" not in info:
        info["licence"] = ", ".join(classifiers)
    bundled = [p for p in target.rglob("*") if p.is_file() and "licen" in p.name.lower()]
    copyleft = []
    for p in bundled:
        text = p.read_text(errors="replace")
        if any(
            s in text for s in ("GNU General Public", "GNU Lesser General", "Mozilla Public Lic")
        ):
            copyleft.append(p.name)
    info["licence_files"] = len(bundled)
    info["copyleft_texts"] = sorted(copyleft)
    libs = [p.name for d in target.glob("*.libs") for p in d.iterdir()]
    info["vendored_libs"] = sorted(libs)
    return info


# --------------------------------------------------------------------------- speed


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm up (imports, caches)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 1)


def _timed(rows: list[dict[str, Any]], task: str, lib: str, fn: Callable[[], object], n: int):
    try:
        rows.append({"task": task, "library": lib, "ms": _median_ms(fn, n)})
    except Exception as exc:  # noqa: BLE001
        rows.append({"task": task, "library": lib, "ms": None, "error": _short(exc)})


def _pillow_j2k(stream: bytes, reduce: int) -> Any:
    from PIL import Image

    im = Image.open(io.BytesIO(stream))
    im.reduce = reduce
    im.load()
    return im


def speed(have: dict[str, bool], repeat: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in ("693_J2KR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"):
        ds = _read(name)
        frame = _frames(ds)[0]
        task = f"decode {name} ({ds.Columns}x{ds.Rows}) full"
        for lib in ("pylibjpeg", "gdcm", "pillow"):
            if have[lib]:
                _timed(
                    rows, task + " (pydicom plugin)", lib, lambda d=ds, x=lib: decode(d, x), repeat
                )
        if have["pylibjpeg"]:
            import openjpeg

            _timed(
                rows,
                task + " (codec call)",
                "pylibjpeg",
                lambda f=frame: openjpeg.decode(f),
                repeat,
            )
        if have["imagecodecs"]:
            import imagecodecs

            _timed(
                rows,
                task + " (codec call)",
                "imagecodecs",
                lambda f=frame: imagecodecs.jpeg2k_decode(f),
                repeat,
            )
        if have["pillow"] and name.startswith("RG1"):
            for r in (0, 1, 2, 3):
                _timed(
                    rows,
                    f"decode {name} reduce={r} (2^-{r} size)",
                    "pillow",
                    lambda f=frame, r=r: _pillow_j2k(f, r),
                    repeat,
                )
    rows.extend(_encode_speed(have, repeat))
    rows.extend(_baseline_decode_speed(have, repeat))
    return rows


def _encode_speed(have: dict[str, bool], repeat: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    images = _images()
    encoders = _encoders(have)
    for target, image in (
        ("j2k", "CT 512x512 int16"),
        ("sv1", "CT 512x512 int16"),
        ("baseline", "CR 1841x1955 uint8"),
    ):
        ds, arr = images[image]
        for lib, fn in encoders[target].items():
            _timed(
                rows, f"encode {image} to {target}", lib, lambda d=ds, a=arr, f=fn: f(d, a), repeat
            )
    return rows


def _baseline_decode_speed(have: dict[str, bool], repeat: int) -> list[dict[str, Any]]:
    from PIL import Image

    rows: list[dict[str, Any]] = []
    ds, arr = _images()["CR 1841x1955 uint8"]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    stream = buf.getvalue()
    wrapped = _wrap(ds, arr, [stream], "1.2.840.10008.1.2.4.50")
    task = "decode JPEG baseline 1841x1955 8-bit"
    for lib in ("gdcm", "pillow"):
        if have[lib]:
            _timed(rows, task + " (pydicom plugin)", lib, lambda x=lib: decode(wrapped, x), repeat)
    if have["imagecodecs"]:
        import imagecodecs

        _timed(
            rows,
            task + " (codec call)",
            "imagecodecs",
            lambda: imagecodecs.jpeg8_decode(stream),
            repeat,
        )
    _timed(
        rows,
        task + " (codec call)",
        "pillow",
        lambda: Image.open(io.BytesIO(stream)).load(),
        repeat,
    )
    return rows


# --------------------------------------------------------------------------- report


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "/") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in (p.split("==")[0] for p in PINS):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_codecs", description=__doc__)
    parser.add_argument(
        "--venv", type=Path, default=Path(tempfile.gettempdir()) / "bench-codecs-venv"
    )
    parser.add_argument("--no-venv", action="store_true", help="use this interpreter as is")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per speed figure")
    parser.add_argument("--skip", default="", help="comma list of coverage,encode,size,speed")
    args = parser.parse_args(argv)
    if not args.no_venv and not _have_candidates():
        _ensure_venv(args.venv, sys.argv[1:] if argv is None else argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    have = _available()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.python_version()} cpus={os.cpu_count()}",
        "versions": _versions(),
    }
    if "coverage" not in skip:
        results["coverage"] = coverage(have)
        print("\n## Decode coverage\n")
        print(_table(results["coverage"], ["file", "ts", "frames", "reference", *DECODERS]))
    if "encode" not in skip:
        results["encode"] = encoding(have)
        print("\n## Encode\n")
        print(_table(results["encode"], ["target", "image", "library", "bytes", "ratio", "result"]))
    if "size" not in skip:
        results["size"] = sizes_and_licences()
        print("\n## Licence and size (Lambda arm64 cp313, unzipped)\n")
        cols = ["package", "version", "mb", "licence", "licence_files", "copyleft_texts"]
        print(_table(results["size"], cols))
    if "speed" not in skip:
        results["speed"] = speed(have, args.repeat)
        print(f"\n## Speed (median of {args.repeat}, {results['machine']})\n")
        print(_table(results["speed"], ["task", "library", "ms", "error"]))
    RESULTS.parent.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous.update(results)
    RESULTS.write_text(json.dumps(previous, indent=1, default=str) + "\n")
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    main()
