"""Per-domain review policies: the file schema, the loader and the pure routing engine."""
