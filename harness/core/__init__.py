"""The foundation every layer may use, and which imports nothing else of the project: the error
type for bad input, sizes and atomic writes, canonical hashes, traffic classes, request chunks
and access-trace files, Markdown tables and PNG saving."""
