"""Assets of the clean stage."""
