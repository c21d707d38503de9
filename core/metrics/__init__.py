"""Metrics: classification (accuracy, macro F1, per class, confusion) and explanation metrics."""
