"""Choosing where a package runs, and clear errors for what this machine lacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.errors import DeviceNotAvailable
from coreml_compile.runtime import devices as dev


def test_devices_lists_the_reference_cpu_everywhere():
    found = coreml_compile.devices()
    assert dev.Device("reference", "cpu", "reference executor (torch kernels)") in found
    has_coreml = dev.coreml_available()[0]
    assert any(d.backend == "coreml" for d in found) == has_coreml


def test_default_choice_follows_the_machine():
    choice = dev.choose()
    if dev.coreml_available()[0]:
        assert choice == dev.Choice("coreml", "all", "")
    else:
        assert choice == dev.Choice("reference", None, "cpu")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backend": "tpu"}, "unknown backend 'tpu'"),
        ({"compute_units": "gpu_only"}, "unknown compute units 'gpu_only'"),
        ({"device": "xpu"}, "unknown device 'xpu'"),
        ({"backend": "reference", "compute_units": "all"}, "compute units apply to the coreml"),
    ],
)
def test_bad_requests_are_rejected(kwargs, message):
    with pytest.raises(DeviceNotAvailable, match=message):
        dev.choose(**kwargs)


@pytest.mark.skipif(dev.coreml_available()[0], reason="this machine has Core ML")
def test_asking_for_core_ml_without_it_names_the_reason():
    with pytest.raises(DeviceNotAvailable, match="backend coreml is not available: Core ML runs"):
        dev.choose(backend="coreml")
    with pytest.raises(DeviceNotAvailable, match="not available"):
        coreml_compile.compile(nn.ReLU(), (torch.randn(2),), compute_units="cpu_and_ne")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_torch_device_is_an_error():
    with pytest.raises(DeviceNotAvailable, match="torch device 'cuda' is not available"):
        dev.choose(device="cuda")


def test_compiled_model_reports_its_backend():
    compiled = coreml_compile.compile(nn.ReLU(), (torch.randn(2),), backend="reference")
    assert compiled.backend == "reference:cpu"
    assert torch.equal(compiled(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
