"""Reading studies: blinded studies, answers, agreement and per-item metrics."""
