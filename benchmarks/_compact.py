"""Small results files for the benchmarks: floats to 4 significant digits, lists of numbers on one line."""

from __future__ import annotations

import json
import re
from typing import Any


def rounded(x: Any) -> Any:
    """Floats to 4 significant digits, through dicts and lists."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def compact_json(result: dict[str, Any]) -> str:
    """``result`` as JSON text: rounded, indented, each list of numbers on one line."""
    text = json.dumps(rounded(result), indent=1)
    text = re.sub(r"\[\s+([-0-9., \n]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return text + "\n"
