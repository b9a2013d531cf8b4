"""Calibration data (sources, batching, CLI flags) and streaming activation statistics.

The public entry points are re-exported by `onnxprune.calib.source` and `onnxprune.calib.collect`.
"""
