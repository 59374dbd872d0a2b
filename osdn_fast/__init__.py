"""osdn_fast: Triton kernels of OSDN (spec C1–C3) behind a torch API (spec §6). Work in progress."""
