"""Loading the user's model: MODEL spec resolution, architectures, weight files, code trust,
timm, class names and where the preprocessing comes from."""
