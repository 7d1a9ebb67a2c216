"""Training face restorers: `vidrestore faces extract` datasets, on-the-fly degradation,
the training loop, export with a model card (see the README's Training section)."""
