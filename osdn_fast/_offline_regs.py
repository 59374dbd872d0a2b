"""Registers, stack and spills of a Triton kernel compiled offline for sm_90 (no GPU needed).

``TRITON_INTERPRET=0 python -m osdn_fast._offline_regs MODULE.KERNEL warps=2 BT=16 BK=128 ...`` compiles ``KERNEL`` of
``osdn_fast.ops.osdn.MODULE`` for an H100 target (``maxnreg=N`` caps the registers) with the given constexprs (defaults:
H=16, K=128, BK=128, HAS_ALPHA=False, PREC=tf32, bf16 keys) and prints cuobjdump's resource usage. A tool for choosing
kernel layouts before spending device time. Compile with the device's Triton (3.6 there): ``pip install --target
/tmp/t36 --no-deps triton==3.6.0`` and ``PYTHONPATH=/tmp/t36``; Triton 3.9 compiled the transposed d-scan map kernel
to 126 registers, 3.6 to 142 (one program an SM instead of two; osdn_fast/NOTES.md, fourteenth session).
"""
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_I32 = {"cu", "chunk_idx", "chunk_off", "cu_seg", "seg_ptr", "cu_s", "bad"}
_SCALAR = {"d_min": "fp32", "d_max": "fp32", "scale": "fp32", "T": "i32"}
_BF16 = {"q", "k", "v", "beta", "alpha", "do", "hbuf", "dhbuf", "dq", "vrbuf", "drbuf", "w", "dw", "dk", "dk_out",
         "dbeta_out", "o", "dv"}
_I8 = {"clipm"}
_DEFAULTS = dict(H=16, K=128, V=128, BK=128, BV=64, BT=16, HAS_ALPHA=False, PREC="tf32")


def _value(s):
    if s.startswith("tl."):  # a dtype constexpr, e.g. DT=tl.float32
        return getattr(tl, s[3:])
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(s, s)


def resources(fn, warps=4, stages=1, sass=False, maxnreg=0, **const):
    """cuobjdump's resource lines of ``fn`` compiled for sm_90 with these constexprs (and, with ``sass``, the
    number of SASS instructions and the most common opcodes); ``maxnreg`` caps the registers a thread (0: none)."""
    if not hasattr(fn, "params"):  # osdn_fast's __init__ turns the interpreter on where there is no GPU
        raise RuntimeError("compile offline with TRITON_INTERPRET=0 set before osdn_fast is imported")
    sig, cons = {}, {}
    for p in fn.params:
        n = p.name
        if p.is_constexpr:
            sig[n] = "constexpr"
            if n in const:
                cons[n] = const[n]
            elif n in _DEFAULTS:
                cons[n] = _DEFAULTS[n]
            elif p.default is not inspect.Parameter.empty:
                cons[n] = p.default
            elif n.startswith(("HAS_", "STORE_")):
                cons[n] = False
        elif n in _SCALAR:
            sig[n] = _SCALAR[n]
        else:
            sig[n] = "*i32" if n in _I32 else ("*bf16" if n in _BF16 else ("*i8" if n in _I8 else "*fp32"))
    if "DT" in sig and "DT" not in cons:
        cons["DT"] = tl.bfloat16
    # pointers 16-byte aligned, as the launcher specializes them at run time (without it every load is scalar)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if sig[n].startswith("*")}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cons, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, "num_stages": stages, **({"maxnreg": maxnreg} if maxnreg else {})})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True)
    res = [ln.strip() for ln in out.stdout.splitlines() if "REG" in ln]
    # the shared memory Triton asks at launch (staged loads, layout conversions): with the registers, what bounds how
    # many programs an SM holds (228 KB of shared memory, 64 K registers on an H100 / H200)
    res.append(f"launch shared memory {k.metadata.shared} B")
    if sass:
        text = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
        ins = [ln for ln in text.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", ln)]
        ops = Counter(re.sub(r"\s+/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?", "", ln).split()[0].split(".")[0]
                      for ln in ins)
        res += [f"SASS {len(ins)}", " ".join(f"{o}:{c}" for o, c in ops.most_common(40))]
    os.unlink(f.name)
    return res


if __name__ == "__main__":
    mod, name = sys.argv[1].split(".")
    fn = getattr(importlib.import_module(f"osdn_fast.ops.osdn.{mod}"), name)
    kw = dict(a.split("=", 1) for a in sys.argv[2:])
    warps = int(kw.pop("warps", 4))
    stages = int(kw.pop("stages", 1))
    sass = bool(_value(kw.pop("sass", "False")))
    maxnreg = int(kw.pop("maxnreg", 0))
    print(name, {k: _value(v) for k, v in kw.items()}, "warps", warps, *resources(
        fn, warps, stages, sass, maxnreg, **{k: _value(v) for k, v in kw.items()}), sep="\n  ")
