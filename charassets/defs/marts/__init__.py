"""Assets of the marts stage."""
