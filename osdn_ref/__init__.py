"""osdn_ref: the float64 NumPy reference of OSDN (spec E1–E8, C1–C3), its theory quantities
(D3, T2–T5, APF) and a high-precision mpmath twin.

Every public function cites the spec labels it implements; the spec is ``shared/osdn-spec.md``.
"""

from .chunkwise import chunkwise_osdn
from .contraction import (consistent_stream, contraction_identity_gap, contraction_sum_bound,
                          right_newton_comparator, right_newton_write)
from .feedback import contraction_factor, feedback, feedback_from_state, feedback_grad, inner_loss
from .highprec import float64_error_vs_mp, recurrent_osdn_mp
from .recurrent import recurrent_osdn
from .regret import best_fixed_precond, dynamic_regret, regret_bound
from .vjp import recurrent_osdn_vjp

__all__ = [
    "recurrent_osdn", "chunkwise_osdn", "recurrent_osdn_vjp", "recurrent_osdn_mp",
    "float64_error_vs_mp", "contraction_factor", "feedback", "feedback_grad", "feedback_from_state",
    "inner_loss", "best_fixed_precond", "regret_bound", "dynamic_regret", "contraction_identity_gap",
    "right_newton_write", "right_newton_comparator", "contraction_sum_bound", "consistent_stream",
]
