"""The runtime layer everything trains through: distributed helpers and the one checkpoint format."""
