"""Triton operators of osdn_fast (layout like flash-linear-attention's ops/)."""
