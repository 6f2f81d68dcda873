"""Assets of the exports stage."""
