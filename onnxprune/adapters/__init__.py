"""onnxprune's steps as passes of other toolchains: onnx-ir (`onnx_ir.py`), Olive (`olive.py`).

The steps themselves are onnxprune Passes (`steps.py`: prune, sparsify, quantize); each adapter
wraps any onnxprune Pass, so a plugin pass of the `onnxprune.passes` entry-point group runs there too.
Each adapter imports its toolchain when it is imported: install the matching extra
(`onnxprune[onnx-ir]`, `onnxprune[olive]`).
"""
