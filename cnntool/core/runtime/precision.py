"""`--precision fp32|tf32|bf16|fp16`: the arithmetic a scan's forward (and backward) runs in.

- fp32 (default): IEEE float32 throughout. On CUDA this also turns off the TF32 that PyTorch
  lets cuDNN use for float32 convolutions by default, so a GPU gives the CPU's numbers to
  float rounding.
- tf32 (CUDA): convolutions and matrix products round their inputs to TF32 (10-bit mantissa)
  and accumulate in float32; everything else stays float32.
- bf16 / fp16: autocast. Convolutions and matrix products run in bfloat16 / float16; ops that
  need range or accuracy (softmax, norms, losses, reductions) stay float32, per torch's
  autocast lists. The weights stay float32 in the module. bf16 on CUDA and on CPUs with
  native bfloat16 (AVX512-BF16 or AMX, where oneDNN runs it several times faster than
  float32); fp16 on CUDA only.

Everything is set inside `PrecisionPlan.context()` and put back when it exits, so nothing
leaks into the rest of the process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cnntool.errors import CnnToolError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

_NOTES = {
    "tf32": "tf32: convolutions and matrix products round their inputs to a 10-bit mantissa "
    "(about 3 significant digits) and accumulate in float32; activations move by "
    "about 1e-3 relative",
    "bf16": "bf16 autocast: convolutions and matrix products run in bfloat16 (8-bit mantissa, "
    "about 2–3 significant digits), the rest in float32; activations move by about "
    "1e-2 relative and near ties can swap classes or top patches",
    "fp16": "fp16 autocast: convolutions and matrix products run in float16 (11-bit mantissa, "
    "largest value 65504), the rest in float32; activations move by about 1e-3 "
    "relative and a layer whose values exceed the range gives inf",
}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU computes bfloat16 itself (oneDNN's fast path)."""
    cpu = getattr(torch, "cpu", None)
    checks = [
        getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(check() for check in checks if check is not None)


@dataclass(frozen=True)
class PrecisionPlan:
    """What a precision means on one device: an autocast dtype and/or the TF32 switches."""

    name: str
    device_type: str
    autocast_dtype: torch.dtype | None = None
    tf32: bool | None = None  # CUDA only: True = allow TF32, False = IEEE float32

    @property
    def note(self) -> str | None:
        """One line for stderr saying what the reduced precision changes (None for fp32)."""
        return _NOTES.get(self.name)

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self.tf32 is not None:
                stack.enter_context(_cuda_fp32_precision("tf32" if self.tf32 else "ieee"))
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(self.device_type, dtype=self.autocast_dtype))
            yield


def precision_plan(precision: str, device: torch.device) -> PrecisionPlan:
    """The plan for `precision` on `device`; one CnnToolError sentence when it cannot run."""
    if precision not in PRECISIONS:
        raise CnnToolError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    kind = device.type
    if precision == "fp32":
        return PrecisionPlan("fp32", kind, tf32=False if kind == "cuda" else None)
    if kind == "cuda":
        if precision == "tf32":
            return PrecisionPlan("tf32", kind, tf32=True)
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise CnnToolError(
                f"--precision bf16 needs a GPU with bfloat16 support; "
                f"{torch.cuda.get_device_name(device)} has none (try fp16)"
            )
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return PrecisionPlan(precision, kind, autocast_dtype=dtype, tf32=False)
    if kind == "cpu":
        if precision == "bf16":
            if not cpu_has_native_bf16():
                raise CnnToolError(
                    "--precision bf16 on the CPU needs AVX512-BF16 or AMX, which "
                    "this CPU lacks (it would be slower than fp32); use fp32"
                )
            return PrecisionPlan("bf16", kind, autocast_dtype=torch.bfloat16)
        raise CnnToolError(
            f"--precision {precision} needs a CUDA device; on the CPU use fp32, "
            "or bf16 where the CPU supports it"
        )
    raise CnnToolError(f"--precision {precision} is not supported on {kind}; use fp32")


@contextlib.contextmanager
def _cuda_fp32_precision(value: str) -> Iterator[None]:
    """cuBLAS and cuDNN float32 precision ("ieee" or "tf32") for the block, then as before.

    Only the per-backend switches are touched where torch has them (mixing them with the
    legacy allow_tf32 flags makes torch refuse to report the matmul precision); an older
    torch gets the legacy flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        with _legacy_tf32(value == "tf32"):
            yield
        return
    matmul = torch.backends.cuda.matmul
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = value, value
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


@contextlib.contextmanager
def _legacy_tf32(allow: bool) -> Iterator[None]:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
