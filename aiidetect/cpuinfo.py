"""What this CPU can do, as far as aiidetect's choices depend on it.

Read once from /proc/cpuinfo (Linux; elsewhere from numpy's runtime CPU
dispatch, which knows AVX2, AVX512F, AVX512-VNNI and AVX512-BF16). Two choices
hang on the flags:

- bfloat16: native (AVX512-BF16, AMX) or emulated, which is slower than float32
  (``backbone.native_bf16_cpu`` asks torch itself);
- int8: with VNNI (AVX512-VNNI, AVX-VNNI, AMX-INT8) a u8 x s8 dot product sums
  into 32 bits. Without it, ONNX Runtime's x86 u8 x s8 kernels (SSE4.1, AVX2,
  AVX512 without VNNI) multiply pairs of bytes with ``vpmaddubsw``, whose 16-bit
  pair sum saturates when both products are large: 255 x 127 x 2 = 64,770 does
  not fit in 32,767. Weights of at most 7 bits (|w| <= 64) cannot overflow
  (255 x 64 x 2 = 32,640), and ONNX Runtime's ``session.x64quantprecision``
  switches wider weights to its exact u8 x u8 kernels on such CPUs.

``AIIDETECT_CPU_WITHOUT=avx512_vnni,avx_vnni,amx_int8`` makes aiidetect treat
the listed flags as absent (``avx512_bf16,amx_tile`` for bf16): to reproduce on
one machine the choices it makes on another (tests, and checking an export
meant for older CPUs). It changes aiidetect's decisions only, never which
instructions the libraries execute: speed measured under it is this CPU's.
"""
from __future__ import annotations

import functools
import os
import platform

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def parse(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in a /proc/cpuinfo text."""
    model, flags = "", None
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k = k.strip()
        if k == "model name" and not model:
            model = v.strip()
        elif k in ("flags", "Features") and flags is None:
            flags = frozenset(v.split())
        if model and flags is not None:
            break
    return model, flags or frozenset()


# numpy's runtime CPU dispatch knows the features that matter here on every OS; their Linux names.
_NUMPY_FLAGS = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16",
                "ASIMDDP": "asimddp"}


def numpy_flags() -> frozenset[str]:
    """The flags above as numpy detected them at import (empty if this numpy does not say)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return frozenset()
    return frozenset(name for key, name in _NUMPY_FLAGS.items() if feats.get(key))


@functools.lru_cache(maxsize=1)
def _read() -> tuple[str, frozenset[str], bool]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model, flags = parse(f.read())
        return model, flags, True
    except OSError:  # not Linux: numpy's view of the CPU (it misses AVX-VNNI: such CPUs get the safe int8 path)
        flags = numpy_flags()
        return platform.processor() or platform.machine(), flags, bool(flags)


def masked() -> frozenset[str]:
    """The flags AIIDETECT_CPU_WITHOUT names."""
    return frozenset(f.strip() for f in os.environ.get("AIIDETECT_CPU_WITHOUT", "").split(",") if f.strip())


def model() -> str:
    return _read()[0]


def flags() -> frozenset[str]:
    """This CPU's flags, less those AIIDETECT_CPU_WITHOUT names: what aiidetect decides on."""
    return _read()[1] - masked()


def hardware_flags() -> frozenset[str]:
    """This CPU's flags as they are: what the libraries run on (and what benchmarks must report)."""
    return _read()[1]


def flags_known() -> bool:
    return _read()[2]


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in _X86


def int8_vnni(cpu_flags: frozenset[str] | None = None) -> bool:
    return bool(set(VNNI_FLAGS) & (flags() if cpu_flags is None else cpu_flags))


def int8_pairs_saturate(cpu_flags: frozenset[str] | None = None, machine: str | None = None) -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels on this CPU can saturate: x86
    without VNNI. An x86 CPU whose flags cannot be read counts as saturating:
    the guard costs speed there, never correctness."""
    if not is_x86(machine):
        return False  # ONNX Runtime's ARM int8 kernels accumulate in 32 bits
    if cpu_flags is None:
        if not flags_known():
            return True
        cpu_flags = flags()
    return not int8_vnni(cpu_flags)


def int8_weight_bits(cpu_flags: frozenset[str] | None = None, machine: str | None = None) -> int:
    """Weight bits for an int8 export meant for this CPU: 7 where 8-bit weights
    could overflow the fast kernels (they then run exact but on the slower u8 x u8
    ones), 8 elsewhere."""
    return 7 if int8_pairs_saturate(cpu_flags, machine) else 8
