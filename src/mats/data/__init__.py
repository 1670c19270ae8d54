"""Text-only training data: the corpus format, the default corpus and the embedding cache."""
