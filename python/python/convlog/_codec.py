"""How dict messages become JSON text: compact, UTF-8, no NaN or Infinity (not JSON)."""

from __future__ import annotations

import json

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

#: dict -> str; raises TypeError for a value JSON has no spelling for, ValueError for NaN.
dumps = _encoder.encode

_ascii_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))

#: The same with every non-ASCII character escaped: for strs holding lone surrogates.
dumps_ascii = _ascii_encoder.encode
