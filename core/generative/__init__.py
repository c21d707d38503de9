"""Generative models: DDPM (diffusers) and the AttGAN-like GAN, with fidelity in bits/dim."""
