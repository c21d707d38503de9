"""Training loops: classifier fit / evaluate / predict_proba (pure torch; no database, no UI)."""
