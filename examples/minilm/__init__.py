"""all-MiniLM-L6-v2 sentence embeddings: dynamic int8 of its Linear layers, tuned per layer."""
