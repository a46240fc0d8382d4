"""The engines: numpy arrays in, numpy arrays out, vectorised over genes, no AnnData."""
