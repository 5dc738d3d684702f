"""Built-in features, each registered as a plugin."""
