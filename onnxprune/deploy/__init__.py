"""Deployment steps after pruning: static INT8 quantization with Q/DQ nodes (`onnxprune.deploy.quantize`)."""
