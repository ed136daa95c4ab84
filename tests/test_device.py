"""jobs.device: a device per backend (onnxruntime may be the CPU build while torch sees a GPU), and the
device string a Ray GPU actor gets. No GPU here: the runtimes are monkeypatched."""

import sys
import types

import pytest

from copyscope.descriptors import descriptor_backend
from copyscope.descriptors.errors import UserError
from copyscope.jobs import device as dev


@pytest.fixture
def gpu_machine(monkeypatch):
    """A machine with an NVIDIA driver and 2 GPUs that torch sees; onnxruntime's providers are set per test."""
    monkeypatch.setattr(dev, "nvidia_driver_present", lambda: True)
    cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    providers = ["CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(get_available_providers=lambda: providers))
    return providers


def test_descriptor_families_declare_their_backend():
    assert descriptor_backend("sscd") == descriptor_backend("sscd_distilled") == "onnx"
    assert descriptor_backend("timm:resnet18") == descriptor_backend("sscd_torchscript") == "torch"
    with pytest.raises(UserError, match="unknown descriptor"):
        descriptor_backend("resnet")
    with pytest.raises(UserError, match="unknown descriptor"):
        descriptor_backend("timm:")


def test_auto_with_cpu_onnxruntime_stays_on_cpu_for_onnx_models(gpu_machine):
    assert dev.resolve_device("auto", "torch") == "cuda"
    assert dev.resolve_device("auto", "onnx") == "cpu"  # before the fix: "cuda", then the actors failed
    with pytest.raises(UserError, match="no CUDAExecutionProvider"):
        dev.resolve_device("cuda", "onnx")
    gpu_machine.insert(0, "CUDAExecutionProvider")  # onnxruntime-gpu
    assert dev.resolve_device("auto", "onnx") == "cuda"
    assert dev.resolve_device("cuda:1", "onnx") == "cuda:1"


def test_explicit_devices_are_checked(gpu_machine):
    assert dev.resolve_device("cpu", "onnx") == dev.resolve_device("cpu", "torch") == "cpu"
    assert dev.resolve_device("cuda:1", "torch") == "cuda:1"
    with pytest.raises(UserError, match="only 2 GPU"):
        dev.resolve_device("cuda:2", "torch")
    for bad in ("gpu", "cuda:x", "cuda:"):
        with pytest.raises(UserError, match="unknown device"):
            dev.resolve_device(bad, "torch")
    with pytest.raises(ValueError, match="unknown backend"):
        dev.resolve_device("auto", "tensorflow")


def test_no_driver_answers_cpu_without_importing_a_runtime(monkeypatch):
    monkeypatch.setattr(dev, "nvidia_driver_present", lambda: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing either would raise ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert dev.resolve_device("auto", "torch") == dev.resolve_device("auto", "onnx") == "cpu"
    with pytest.raises(UserError, match="no GPU is visible"):
        dev.resolve_device("cuda:0", "onnx")


def test_a_ray_gpu_actor_sees_its_gpu_as_cuda0(monkeypatch):
    assert dev.actor_device("cpu") == "cpu"
    assert dev.actor_device("cuda") == dev.actor_device("cuda:3") == "cuda:0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert dev.ray_visible_devices("cuda:3") == "3"
    assert dev.ray_visible_devices("cuda") is None and dev.ray_visible_devices("cpu") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # the job itself was already narrowed
    assert dev.ray_visible_devices("cuda:1") == "6"
    with pytest.raises(UserError, match="lists 2 GPU"):
        dev.ray_visible_devices("cuda:2")
