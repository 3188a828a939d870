"""avaf.shared: what both stages agree on (feature-store schema and I/O, annotations, answers, types)."""
