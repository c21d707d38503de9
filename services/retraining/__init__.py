"""Retraining: eXBL retrains with matched controls, their evidence and the before / after report."""
