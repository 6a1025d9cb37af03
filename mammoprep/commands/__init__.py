"""One module per CLI command; each holds thin click code that calls library functions."""
