"""Use cases shared by the Streamlit pages and the `exemplar` CLI; the job queue and the worker."""
