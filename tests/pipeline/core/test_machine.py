"""The machine a number was made on: a CPU is its code paths, not its name; a GPU run names the GPU and CUDA."""

from __future__ import annotations

import torch

from pipeline.core import machine

ZEN1 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 2
flags\t\t: fpu sse4_1 sse4_2 avx f16c avx2 fma bmi2

processor\t: 1
model name\t: AMD EPYC
"""
ZEN4 = ZEN1.replace(": 23", ": 25").replace("avx2 fma", "avx2 fma avx512f avx512bw avx512_vnni avx512_bf16")


def test_the_machine_is_the_cpu_not_its_name():
    # two cloud CPUs seen here share the name "AMD EPYC"; only one of them runs AVX-512 code
    zen1, zen4 = machine.cpu_identity(ZEN1), machine.cpu_identity(ZEN4)
    assert zen1["cpu"] == zen4["cpu"] == "AMD EPYC"
    assert zen1["cpu_id"] == "23/1/2" and zen4["cpu_id"] == "25/1/2"
    assert zen1["isa"] == ["avx", "avx2", "f16c", "fma", "sse4_1", "sse4_2"]
    assert {"avx512f", "avx512_vnni", "avx512_bf16"} <= set(zen4["isa"])
    assert zen1 != machine.cpu_identity(ZEN1.replace(": 23", ": 25"))  # same flags, another family
    assert machine.cpu_identity("")["isa"] == []


def test_the_compute_identity_names_the_cpu_and_the_library_versions(monkeypatch, tmp_path):
    here = machine.compute_identity(torch.device("cpu"))
    assert here["torch"] == torch.__version__ and here["numpy"] and here["transformers"]
    assert {k: here[k] for k in ("cpu", "cpu_id", "isa")} == machine.this_cpu()
    assert "gpu" not in here
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # a torch upgrade
    assert machine.compute_identity(torch.device("cpu")) == {**here, "torch": "9.9.9"}
    (tmp_path / "cpuinfo").write_text(ZEN4)
    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "cpuinfo")  # another CPU, same libraries
    other = machine.compute_identity(torch.device("cpu"))
    assert other["cpu_id"] == "25/1/2" and other["isa"] == machine.cpu_identity(ZEN4)["isa"]


def test_on_a_gpu_the_identity_names_the_gpu_and_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    gpu = machine.compute_identity(torch.device("cuda:0"))
    assert gpu["gpu"] == "NVIDIA H100 80GB HBM3" and gpu["cuda"] == "12.4" and gpu["cudnn"] == 90100
    assert set(gpu["tf32"]) == {"matmul", "cudnn"} and gpu["torch"] == torch.__version__
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-40GB")
    assert machine.compute_identity(torch.device("cuda:0")) != gpu
