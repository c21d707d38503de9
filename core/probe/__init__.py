"""Shortcut probes that need no generator: artefact injection (artefact.py) and counterfactual change mass (change_mass.py)."""
