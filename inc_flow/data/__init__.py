"""Datasets, transforms and dataloaders (INC 1.x names)."""
