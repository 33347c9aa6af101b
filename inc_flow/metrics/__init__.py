"""Built-in metrics (INC 1.x names) and postprocess."""
