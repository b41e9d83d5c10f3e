"""Size limits, checked before anything is written. Policy as data: one frozen table."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Configurable request limits.

    Attributes:
        max_key_bytes: longest key, in encoded bytes (str keys count UTF-8 bytes).
        max_record_bytes: largest encoded record (bins plus header).
        max_bin_name: longest bin name, in characters.
        max_set_name: longest set name, in characters.
        max_vector_dim: most elements in a numpy array stored in a bin.
    """

    max_key_bytes: int = 1024
    max_record_bytes: int = 1 << 20
    max_bin_name: int = 64
    max_set_name: int = 64
    max_vector_dim: int = 4096


DEFAULT_LIMITS = Limits()
