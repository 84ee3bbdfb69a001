"""Training: dataset layouts, augmentations and one trainer per detector family."""
