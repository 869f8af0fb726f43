"""Layer 2: the PyTorch engine: data sets, models, training and pruning."""
