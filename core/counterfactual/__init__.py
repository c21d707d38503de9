"""Counterfactual search methods: XAIDIFF guidance, the adversarial baseline and GCI."""
