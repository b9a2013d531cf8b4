"""Recovery without training: re-fit pruned layers by least squares on calibration data.

`layers.py` finds the layers to re-fit and orders them in waves, `solve.py` holds the ridge
solver and the Gram-based error, `weights.py` reads and writes a layer's effective weight and bias,
`fidelity.py` compares model outputs. The pass and `reconstruct()` live in `onnxprune.passes.reconstruct`.
"""
