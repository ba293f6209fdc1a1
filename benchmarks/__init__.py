"""Scripts that print figures: ``python -m benchmarks.converge`` from the checkout root."""
