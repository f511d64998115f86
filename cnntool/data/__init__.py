"""Package data: natural_spectrum.npy (MACO's natural-image magnitude spectrum; made by
scripts/make_spectrum.py from the photos that the sample packages ship)."""
