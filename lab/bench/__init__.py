"""`python -m backend bench`: fills through a real backend as a plug-in sees them, with peers to compare."""
