"""Learned models: text embedders, tag vectors, attribute heads, their training and registry."""
