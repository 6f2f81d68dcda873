"""Pictures to attributes: decode, fetch, stage, colours and the signal backends."""
