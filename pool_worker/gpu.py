"""GPUs through NVML: does index N exist here, what is it called, how much memory it has.

NVML numbers devices in PCI bus order; CUDA, by default, fastest first. Executors get
`CUDA_DEVICE_ORDER=PCI_BUS_ID` next to `CUDA_VISIBLE_DEVICES` so both mean the same card."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from broker_topology.control import GpuInfo


class GpuUnavailable(Exception):
    """One line saying why the GPU cannot be used."""


def _nvml() -> Any:
    with warnings.catch_warnings():  # the `pynvml` shim warns that it is a shim
        warnings.simplefilter("ignore")
        import pynvml
    return pynvml


def probe(indices: Iterable[int]) -> dict[int, GpuInfo]:
    """Name and memory of each GPU index, or GpuUnavailable for the first one that is not
    there (no driver, or no such index)."""
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    nvml = _nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise GpuUnavailable(f"no NVIDIA driver on this machine (NVML: {exc})") from None
    try:
        count = nvml.nvmlDeviceGetCount()
        found: dict[int, GpuInfo] = {}
        for index in wanted:
            if index >= count:
                have = f"{count} GPU{'s' if count != 1 else ''}"
                listed = f": {', '.join(map(str, range(count)))}" if count else ""
                raise GpuUnavailable(f"GPU {index} does not exist (this machine has "
                                     f"{have}{listed})")
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total
            found[index] = GpuInfo(index=index, name=name.decode() if isinstance(name, bytes)
                                   else str(name), memory=int(memory))
        return found
    except nvml.NVMLError as exc:
        raise GpuUnavailable(f"NVML: {exc}") from None
    finally:
        nvml.nvmlShutdown()


def executor_env(gpu: int | None) -> dict[str, str]:
    """What an executor's process environment gets for the slot's GPU."""
    if gpu is None:
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu)}
