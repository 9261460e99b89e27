"""ground_stations."""
