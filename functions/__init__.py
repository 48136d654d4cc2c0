"""Trigger functions: one module per capability, each exposing a `bp` Blueprint; function_app registers them."""
