"""Benchmarks with ground truth: ``feedalign.bench.exact`` (every loss against its closed-form
target on the tabular environment; fronts in ``feedalign.bench.exact_front``)."""
