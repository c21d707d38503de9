"""Pure ML: data, models, explanations, metrics, XBL losses, generative models, counterfactuals (no streamlit, no sqlalchemy)."""
