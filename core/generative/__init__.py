"""Generative models used to explain classifiers: a small DDPM (ddpm) and its fidelity in bits/dim (bpd)."""
