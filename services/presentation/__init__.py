"""Presentation shared by the pages, the CLI and the exports: colours and scales (`palette`) and how the before /
after report looks (`report_view`). Nothing here computes a result; core/ holds no presentation
(docs/architecture.md, Rooms)."""
