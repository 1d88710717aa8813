"""The engine's compiled CPU kernel: the fused batched LoRA (``csrc/bgmv.cpp``), registered as
``torch.ops.openledger.bgmv_``.

``make kernels`` (which ``make test``, ``make bench`` and ``make demo`` run) compiles it once
with the machine's C++ compiler into ``.tools/kernels/`` (:func:`main`); the engine loads it
when it is there and up to date, and without it serves with the torch kernels (a warning says
so), so a node on a machine without a compiler still runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "bgmv.cpp"
LIBRARY_NAME = "openledger_kernels"
BUILD_ROOT = Path(
    os.environ.get(
        "OPENLEDGER_KERNELS_DIR", Path(__file__).resolve().parents[2] / ".tools" / "kernels"
    )
)
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast"]


def _build_dir() -> Path:
    """One folder per source and torch version (a rebuilt torch needs a rebuilt library)."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:12]
    return BUILD_ROOT / f"torch-{torch.__version__}-{digest}"


def _library() -> Path:
    return _build_dir() / f"{LIBRARY_NAME}.so"


def build(verbose: bool = False) -> Path:
    """Compiles the kernel (a no-op when it is built already); its path."""
    from torch.utils import cpp_extension

    folder = _build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=LIBRARY_NAME,
        sources=[str(SOURCE)],
        extra_cflags=FLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=verbose,
    )
    return _library()


_loaded: bool | None = None


def fused_lora_available() -> bool:
    """Whether ``torch.ops.openledger.bgmv_`` is usable (loads the built library once)."""
    global _loaded
    if _loaded is None:
        library = _library()
        if library.is_file():
            torch.ops.load_library(str(library))
            _loaded = True
        else:
            _loaded = False
            log.warning(
                "the fused CPU LoRA kernel is not built (%s): serving with the torch kernels; "
                "`make kernels` builds it",
                library,
            )
    return _loaded


def main() -> None:
    """``make kernels``: build, and say where."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not _library().is_file():
        log.info("compiling the node's fused CPU LoRA kernel (once, ~20 s) ...")
    log.info("fused CPU LoRA kernel: %s", build())
