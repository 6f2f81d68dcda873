"""Tag strings to attributes: the vocabulary, cleaning, per-record extraction and character profiles."""
