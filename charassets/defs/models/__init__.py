"""Assets of the models stage."""
