"""OSDN operators: chunkwise (C1–C3) and token-by-token (E1–E8) Triton kernels behind the spec §6 API."""

from .chunk import chunk_osdn
from .fused_recurrent import fused_recurrent_osdn

__all__ = ["chunk_osdn", "fused_recurrent_osdn"]
