"""Which dtype the polar factor runs in: chosen once per job by what the device computes fastest.

Newton-Schulz and Polar Express are chains of matrix products, so they run at the device's
matrix-product rate, and that rate depends on the dtype in a way that differs between
machines: GPUs since NVIDIA Ampere (capability 8.0) and CPUs with bfloat16 units (x86
AVX512-BF16 / AMX-BF16) multiply bfloat16 matrices several times faster than float32, while
a CPU without them emulates bfloat16 50-100x *slower* than float32. bfloat16 is accurate
enough for the polar factor of an optimizer step (it is what ``torch.optim.Muon`` always uses,
Jordan et al. 2024), so the rule is: bfloat16 where it is clearly faster, float32 elsewhere.

:func:`choose_polar_dtype` decides, in this order:

1. an explicit ``requested`` dtype (the ``ns_dtype`` option of the presets): taken as given;
2. the environment variable ``EVERYSCALE_POLAR_DTYPE`` (``float32``, ``bfloat16``,
   ``float16``, ``float64`` or ``auto``);
3. CUDA: the device's compute capability (>= 8.0: bfloat16 tensor cores);
4. a CPU whose flags are known to lack bfloat16 units (x86 Linux without ``avx512_bf16``,
   ``amx_bf16``, ``avx_ne_convert``): float32 without measuring;
5. otherwise a one-off measurement (:func:`time_polar_probes`): one Polar Express step on a
   small stack in each dtype, best of five; bfloat16 wins only when it takes at most
   ``BFLOAT16_MARGIN`` of the float32 time. The result is cached on disk, per user, in
   ``$EVERYSCALE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/everyscale``, i.e.
   ``~/.cache/everyscale``), file ``polar_dtype.json``, keyed by :func:`device_key` (CPU model
   and bfloat16-related flags or GPU name, and the torch version), so later jobs skip it.

Under ``torch.distributed`` every rank takes rank 0's choice (:func:`agree_across_ranks`,
one ``broadcast_object_list``), so replicas never run different dtypes. The optimizer stores
the choice in its ``state_dict``, so a resumed run keeps the dtype it started with even on
another machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BFLOAT16_MARGIN",
    "CACHE_ENV",
    "DTYPE_ENV",
    "PolarDtypeChoice",
    "agree_across_ranks",
    "cache_file",
    "choose_by_timings",
    "choose_polar_dtype",
    "device_key",
    "time_polar_probes",
]

DTYPE_ENV = "EVERYSCALE_POLAR_DTYPE"
CACHE_ENV = "EVERYSCALE_CACHE_DIR"
#: bfloat16 is chosen when its probe takes at most this fraction of the float32 probe's time
#: (a tie goes to float32, the more accurate of the two)
BFLOAT16_MARGIN = 0.8
#: dtypes a user may ask for; the automatic choice is between float32 and bfloat16
DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
_PROBE_SHAPE = (2, 256, 512)
_CACHE_NAME = "polar_dtype.json"
# The verdicts this process has already read or measured, by (cache file, device key).
_REMEMBERED: dict[tuple[str, str], PolarDtypeChoice] = {}

#: ``measure(device) -> (float32_seconds, bfloat16_seconds)`` of the probe; tests pass a fake
Measure = Callable[[torch.device], tuple[float, float]]


@dataclass(frozen=True)
class PolarDtypeChoice:
    """The dtype of the polar factor and why it was chosen: plain data, so it can be saved in
    a ``state_dict`` and broadcast between ranks."""

    dtype: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"dtype": self.dtype, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any) -> PolarDtypeChoice:
        if not isinstance(data, dict) or data.get("dtype") not in DTYPE_NAMES:
            raise ValueError(
                f"polar dtype record must be a dict with 'dtype' one of {', '.join(DTYPE_NAMES)} "
                f"and a 'reason', got {data!r}"
            )
        return cls(dtype=str(data["dtype"]), reason=str(data.get("reason", "")))


def choose_polar_dtype(
    device: torch.device | str | None = None,
    requested: str | torch.dtype | None = "auto",
    *,
    cache_dir: str | os.PathLike | None = None,
    measure: Measure | None = None,
    cpu_flags: frozenset[str] | None = None,
    distributed: bool = True,
) -> PolarDtypeChoice:
    """The polar factor's dtype for a job on ``device`` (see the module docstring for the rule).

    Args:
        device: where the parameters live (default: the CPU).
        requested: ``"auto"`` (or ``None``) to choose; a dtype or its name to force it.
        cache_dir: where the measurement is cached (default: ``$EVERYSCALE_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/everyscale`` or ``~/.cache/everyscale``).
        measure: ``measure(device) -> (float32_seconds, bfloat16_seconds)``; default
            :func:`time_polar_probes`. Its verdict is cached: a cached device is not measured.
        cpu_flags: the CPU's flags (default: read from ``/proc/cpuinfo`` where it exists).
        distributed: under an initialized ``torch.distributed``, take rank 0's automatic
            choice (every rank must call this, as every rank builds its optimizer).

    Raises:
        ValueError: ``requested`` or ``$EVERYSCALE_POLAR_DTYPE`` is not a known dtype.
    """
    device = torch.device("cpu" if device is None else device)
    forced = _forced_dtype(requested, "ns_dtype")
    if forced is not None:
        return PolarDtypeChoice(forced, f"asked for: ns_dtype={forced!r}")
    from_env = _forced_dtype(os.environ.get(DTYPE_ENV), f"environment variable {DTYPE_ENV}")
    if from_env is not None:
        return PolarDtypeChoice(from_env, f"environment variable {DTYPE_ENV}={from_env}")
    choice = _automatic_choice(device, cache_dir, measure, cpu_flags)
    return agree_across_ranks(choice) if distributed else choice


def _forced_dtype(value: str | torch.dtype | None, where: str) -> str | None:
    """The dtype name ``value`` asks for, or None for ``auto``/unset; bad names are an error."""
    if value is None:
        return None
    name = str(value).removeprefix("torch.").strip().lower()
    if name in ("", "auto"):
        return None
    aliases = {"bf16": "bfloat16", "fp32": "float32", "float": "float32", "fp16": "float16",
               "half": "float16", "fp64": "float64", "double": "float64"}  # fmt: skip
    name = aliases.get(name, name)
    if name not in DTYPE_NAMES:
        raise ValueError(
            f"{where} must be 'auto' or one of {', '.join(DTYPE_NAMES)}, got {value!r}"
        )
    return name


def _automatic_choice(
    device: torch.device,
    cache_dir: str | os.PathLike | None,
    measure: Measure | None,
    cpu_flags: frozenset[str] | None,
) -> PolarDtypeChoice:
    if device.type == "cuda" and measure is None:
        return _cuda_choice(device)
    if device.type == "cpu" and _lacks_bfloat16_units(cpu_flags):
        return PolarDtypeChoice(
            "float32", f"this CPU has no bfloat16 units (none of {', '.join(_BF16_CPU_FLAGS)})"
        )
    return _cached_measurement(device, cache_dir, measure or time_polar_probes)


def _lacks_bfloat16_units(cpu_flags: frozenset[str] | None) -> bool:
    """True when the CPU's flags say so: given ``cpu_flags``, or x86 ``/proc/cpuinfo``."""
    if cpu_flags is None:
        is_x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
        cpu_flags = _cpu_flags() if is_x86 else frozenset()
    return bool(cpu_flags) and not cpu_flags & set(_BF16_CPU_FLAGS)


def _cuda_choice(device: torch.device) -> PolarDtypeChoice:
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    name = torch.cuda.get_device_name(index)
    if (major, minor) >= (8, 0):
        return PolarDtypeChoice(
            "bfloat16", f"{name} (capability {major}.{minor}) has bfloat16 tensor cores"
        )
    return PolarDtypeChoice(
        "float32", f"{name} (capability {major}.{minor}) has no bfloat16 tensor cores"
    )


def choose_by_timings(float32_seconds: float, bfloat16_seconds: float) -> PolarDtypeChoice:
    """bfloat16 if its probe takes at most ``BFLOAT16_MARGIN`` of float32's time, else float32."""
    ratio = float32_seconds / bfloat16_seconds if bfloat16_seconds > 0 else float("inf")
    measured = (
        f"measured: a polar step takes {float32_seconds * 1e3:.2f} ms in float32, "
        f"{bfloat16_seconds * 1e3:.2f} ms in bfloat16"
    )
    if bfloat16_seconds <= BFLOAT16_MARGIN * float32_seconds:
        return PolarDtypeChoice("bfloat16", f"{measured} ({ratio:.1f}x faster)")
    return PolarDtypeChoice("float32", f"{measured} (bfloat16 not faster by 1/{BFLOAT16_MARGIN})")


def time_polar_probes(device: torch.device, rounds: int = 5) -> tuple[float, float]:
    """Seconds of one Polar Express step on a ``(2, 256, 512)`` stack: (float32, bfloat16).

    Each is the fastest of ``rounds`` calls, the two dtypes taking turns so that other work
    on the machine slows both alike; on the CPU the probe runs on one thread, which a busy
    machine disturbs far less than a team of threads (the ratio is a property of the cores'
    units). When the bfloat16 warm-up is over 10x slower than float32's (a CPU emulating
    bfloat16) the first timings are returned at once.
    """
    from everyscale.optim.polar import polar_factor

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_PROBE_SHAPE, generator=generator).to(device)

    def once(dtype: torch.dtype) -> float:
        start = time.perf_counter()
        polar_factor(x, method="polar_express", steps=1, dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        best = [once(torch.float32), once(torch.bfloat16)]  # warm-up: kernel choice, memory
        if best[1] > 10 * best[0]:
            return best[0], best[1]
        for _ in range(rounds):
            best = [min(best[0], once(torch.float32)), min(best[1], once(torch.bfloat16))]
    finally:
        torch.set_num_threads(threads)
    return best[0], best[1]


def device_key(device: torch.device | str) -> str:
    """The cache key of a device: its model (and bfloat16 flags) and the torch version."""
    device = torch.device(device)
    if device.type == "cuda":
        model = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        flags = sorted(_cpu_flags() & set(_BF16_CPU_FLAGS))
        model = f"{_cpu_model()} [{' '.join(flags) or 'no bf16 flags'}]"
    else:
        model = device.type
    return f"{device.type}: {model}; torch {torch.__version__}"


def cache_file(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where measured choices are cached (see the module docstring)."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV)
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        cache_dir = Path(base) / "everyscale"
    return Path(cache_dir) / _CACHE_NAME


def _cached_measurement(
    device: torch.device, cache_dir: str | os.PathLike | None, measure: Measure
) -> PolarDtypeChoice:
    """The cached verdict for ``device``, or a fresh measurement that is then cached."""
    path = cache_file(cache_dir)
    key = device_key(device)
    memo = (str(path), key)
    if measure is time_polar_probes and memo in _REMEMBERED:
        return _REMEMBERED[memo]
    entries = _read_cache(path)
    try:
        cached = PolarDtypeChoice.from_dict(entries[key])
        choice = PolarDtypeChoice(cached.dtype, f"{cached.reason} (cached in {path})")
    except (KeyError, ValueError):  # not measured yet, or a damaged entry: measure
        choice = choose_by_timings(*measure(device))
        entries[key] = {**choice.to_dict(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        stored = "cached in" if _write_cache(path, entries) else "not cached: cannot write"
        choice = PolarDtypeChoice(choice.dtype, f"{choice.reason}; {stored} {path}")
    if measure is time_polar_probes:
        _REMEMBERED[memo] = choice
    return choice


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> bool:
    """Write the cache atomically (temporary file, then rename); False if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".polar_dtype.")
        try:
            with os.fdopen(handle, "w") as f:
                json.dump(entries, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError:
        return False
    return True


def agree_across_ranks(choice: PolarDtypeChoice, src: int = 0) -> PolarDtypeChoice:
    """Rank ``src``'s choice on every rank (a no-op outside ``torch.distributed``)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return choice
    payload = [choice.to_dict() if dist.get_rank() == src else None]
    dist.broadcast_object_list(payload, src=src)
    agreed = PolarDtypeChoice.from_dict(payload[0])
    if dist.get_rank() == src:
        return agreed
    return PolarDtypeChoice(agreed.dtype, f"rank {src}'s choice: {agreed.reason}")


def _cpu_info_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _cpu_flags() -> frozenset[str]:
    for line in _cpu_info_lines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _cpu_model() -> str:
    for line in _cpu_info_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    name = platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({hashlib.sha1(platform.platform().encode()).hexdigest()[:8]})"
