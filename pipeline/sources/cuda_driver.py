"""The CUDA driver calls the hardware decoders need from us: the GPU's primary context, as a handle, and (in a
decoding group's process) waits that sleep instead of spinning.

PyNvVideoCodec's low-level decoder, given no context, takes the calling
thread's current one, and where the thread has none (a capture thread before
its first torch call) it creates a context of its own, one per camera, which
the GPU time-slices with torch's. The decoder destroys that context with
itself, and a frame it handed out that is freed afterwards makes the library
end the process (``CUDA_ERROR_CONTEXT_IS_DESTROYED``). Handing it the primary
context (torch's) avoids both."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from pipeline.errors import SourceError

_LIBRARIES = ("libcuda.so.1", "libcuda.so")


def _driver() -> ctypes.CDLL:
    names = [*_LIBRARIES, ctypes.util.find_library("cuda") or ""]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise SourceError("the CUDA driver library (libcuda) could not be loaded")


def _check(result: int, call: str) -> None:
    if result != 0:
        raise SourceError(f"CUDA driver call {call} failed (error {result})")


def _device(gpu_id: int) -> tuple[ctypes.CDLL, ctypes.c_int]:
    """The driver, initialised, and GPU ``gpu_id``'s device handle."""
    cuda = _driver()
    device = ctypes.c_int()
    _check(cuda.cuInit(0), "cuInit")
    _check(cuda.cuDeviceGet(ctypes.byref(device), gpu_id), "cuDeviceGet")
    return cuda, device


@functools.cache
def primary_context(gpu_id: int) -> int:
    """GPU ``gpu_id``'s primary context (the one torch works in), retained for the life of the process."""
    cuda, device = _device(gpu_id)
    context = ctypes.c_void_p()
    _check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
    if not context.value:
        raise SourceError(f"GPU {gpu_id} has no primary CUDA context")
    return int(context.value)


CU_CTX_SCHED_BLOCKING_SYNC = 0x04


def sleep_on_waits(gpu_id: int) -> None:
    """Make threads that wait for GPU ``gpu_id`` in this process sleep instead of spinning (the primary context's
    scheduling flag; call before the context is first used)."""
    cuda, device = _device(gpu_id)
    _check(cuda.cuDevicePrimaryCtxSetFlags_v2(device, CU_CTX_SCHED_BLOCKING_SYNC), "cuDevicePrimaryCtxSetFlags")
