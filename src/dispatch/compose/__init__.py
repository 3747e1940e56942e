"""Content: briefs and issues in, variants rendered once, message bytes out. Pure
functions over plain values; never the store, never the network."""
