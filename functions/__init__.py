"""Thin trigger adapters: decode the binding, call ``shared``, encode the result."""
