"""osdn_fast: Triton kernels of OSDN (spec C1–C3, E1–E8) behind the torch API of spec §6.

``chunk_osdn`` (training, chunkwise, Triton forward and backward) and ``fused_recurrent_osdn``
(token-by-token decoding from a carried (state, preconditioner)) share one signature and one validation.

Without a visible CUDA device the kernels can only run in the Triton interpreter, so importing this
package on such a machine sets ``TRITON_INTERPRET=1`` unless it is already set (it must be set before
the kernels are defined).
"""

import os as _os

if "TRITON_INTERPRET" not in _os.environ:
    import torch as _torch

    if not _torch.cuda.is_available():
        _os.environ["TRITON_INTERPRET"] = "1"

from .ops.osdn import chunk_osdn, fused_recurrent_osdn  # noqa: E402

__all__ = ["chunk_osdn", "fused_recurrent_osdn"]
