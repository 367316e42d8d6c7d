"""Which CUDA errors leave a device unusable ("sticky" errors).

After an illegal memory access, a device-side assert or a kernel launch failure the
CUDA context of the process is corrupt: every later CUDA call on it fails with the same
error, and only a new process gets a working context. Such an error is not the fault
of the request that met it, so the worker marks its device poisoned (``/readyz`` turns
503 naming it) instead of failing request after request while claiming to be ready.

Errors a device recovers from (out of memory, a shape or dtype mistake, a kernel not
built for this GPU) are not poisoning: the request fails, the next one may succeed.

Pure string and type checks: importing this module does not import torch.
"""

from __future__ import annotations

import re
from typing import Optional

# The CUDA runtime's sticky errors, by the words of cudaGetErrorString (what torch,
# onnxruntime and TensorRT put in their messages) and by enum name and number
# (onnxruntime writes "CUDA failure 700: ...", some wrappers the enum name).
_STICKY_TEXT = (
    "an illegal memory access was encountered",       # cudaErrorIllegalAddress 700
    "device-side assert triggered",                     # cudaErrorAssert 710
    "unspecified launch failure",                       # cudaErrorLaunchFailure 719
    "the launch timed out and was terminated",          # cudaErrorLaunchTimeout 702
    "hardware stack error",                             # cudaErrorHardwareStackError 714
    "an illegal instruction was encountered",           # cudaErrorIllegalInstruction 715
    "misaligned address",                               # cudaErrorMisalignedAddress 716
    "operation not supported on global/shared address space",   # 717
    "invalid program counter",                          # cudaErrorInvalidPc 718
    "uncorrectable ecc error encountered",              # cudaErrorECCUncorrectable 214
    # cuBLAS / cuDNN report a kernel that died under them this way; it is the same
    # broken context seen through a library
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
)
_STICKY_NAMES = ("cudaErrorIllegalAddress", "cudaErrorAssert", "cudaErrorLaunchFailure",
                 "cudaErrorLaunchTimeout", "cudaErrorHardwareStackError",
                 "cudaErrorIllegalInstruction", "cudaErrorMisalignedAddress",
                 "cudaErrorInvalidAddressSpace", "cudaErrorInvalidPc",
                 "cudaErrorECCUncorrectable")
_STICKY_CODES = {214, 700, 702, 710, 714, 715, 716, 717, 718, 719}
_CODE = re.compile(r"cuda (?:failure|error)[ :]*(\d{3})\b", re.IGNORECASE)


def poisoning_reason(exc: BaseException) -> Optional[str]:
    """The message of the sticky CUDA error in ``exc`` or its causes, or None.

    The cause chain is followed because wrappers (a backend's own error type, a failed
    request's ``InferenceFailed``) carry the CUDA error as ``__cause__`` or in their
    text."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "OutOfMemoryError":
            return None                    # recoverable: memory frees with the request
        text = str(current)
        lower = text.lower()
        code = _CODE.search(text)
        if (any(s in lower for s in _STICKY_TEXT) or any(n in text for n in _STICKY_NAMES)
                or (code is not None and int(code.group(1)) in _STICKY_CODES)):
            return text.strip().splitlines()[0] if text.strip() else type(current).__name__
        current = current.__cause__ or current.__context__
    return None


def is_poisoning_cuda_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a sticky CUDA error
    after which the device's context is unusable (see the module doc)."""
    return poisoning_reason(exc) is not None
