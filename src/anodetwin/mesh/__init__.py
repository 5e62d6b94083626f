"""Meshes of segmented electrode microstructures with phase, particle and boundary tags."""
