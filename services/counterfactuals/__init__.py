"""Counterfactuals: diffusion and GAN counterfactuals, their realism and the shortcut probe."""
