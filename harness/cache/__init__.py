"""The built-in cache model: the set-associative LLC with its KV reservation (``llc``), the
reservation policies (``policies/``, one module each), the fully associative token caches and
bounds (``tokencache``), the timing model (``timing``) and the run driver (``simulate``), with
the numba data structures they share (``dlist``, ``heap``, ``hashtab``)."""
