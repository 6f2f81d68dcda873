"""Assets of the raw stage."""
