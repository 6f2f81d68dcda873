"""Assets of the labels stage."""
