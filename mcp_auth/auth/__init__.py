"""The pipeline's auth layer: bearer tokens, principals and the files that hold tokens."""
