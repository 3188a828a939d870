"""avaf.train: AVAF-Net (Zhao, Wang, Jin, AAAI 2025) trained on a feature store."""
