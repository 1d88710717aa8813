"""Imported first by the chain benchmarks (gas, indexer, API): ape's data folder and the
Solidity compiler where the tests keep them, set before ape can be imported, and the
repository root importable where the project is not installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("APE_DATA_FOLDER", str(ROOT / ".data" / "ape"))
os.environ.setdefault("SOLCX_BINARY_PATH", str(ROOT / ".tools" / "solcx"))
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # last: the root's datasets/ folder must not shadow a package
