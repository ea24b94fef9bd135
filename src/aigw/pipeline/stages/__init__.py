"""pipeline/stages."""
