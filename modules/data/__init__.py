"""Data: loading and validating a CSV, the Kaggle fetch, the offline sample, Muse recordings to
features, provenance of the production dataset, and the held-out split."""
