"""Presentation shared by the pages and the figures services draw (the retrain report): colours and scales
(`palette`). Nothing here computes a result; core/ holds no presentation (docs/architecture.md, Floors)."""
