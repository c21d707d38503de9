"""Page parts: panels that one page composes (so each panel has one owner and one job)."""
