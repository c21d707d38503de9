"""Streamlit pages: UI only; they read through services and db and start work through services."""
