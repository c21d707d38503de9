"""Explanations: explanation runs, method evaluation, LTX, feedback, ratings and their export."""
