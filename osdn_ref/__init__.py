"""osdn_ref: the float64 NumPy reference of OSDN (spec E1–E8, C1–C3), its theory quantities
(T2–T5, APF) and a high-precision mpmath twin.
"""

from .recurrent import recurrent_osdn

__all__ = ["recurrent_osdn"]
