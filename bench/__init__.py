"""Benchmarks of the sync core against real servers: `python -m bench`.

Each benchmark measures the product side by side with a baseline in the same
run and reports a ratio, because the machines these run on are shared and
noisy; absolute figures are printed too, but only the ratios are goals.
"""
