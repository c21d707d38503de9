"""Datasets as arrays: SynthCXR generation, image checks, the per-dataset array cache."""
