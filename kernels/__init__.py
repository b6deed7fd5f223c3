"""Triton kernels of pyslice, installed as ``pyslice.kernels``.

Each kernel mirrors a torch reference in ``pyslice.reference`` operation for operation. They run on
CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (set in the environment before
import), which is how the test suite exercises them on machines without a GPU.
"""
