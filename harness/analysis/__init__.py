"""Locality analysis of index logs (``locality``): overlap, reuse, fragmentation, working sets
and token miss-ratio curves."""
