"""Settings files: config.yaml (every setting, commented) and symbols.yaml (subscriptions)."""
