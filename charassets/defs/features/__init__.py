"""Assets of the features stage."""
