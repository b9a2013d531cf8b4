"""Unstructured and N:M sparsity."""
