"""Policies that expose sequence log-probabilities.

  * ``feedalign.policies.hf``        - Hugging Face causal LMs: loading, chunked per-sequence
                                       log-probs, generation;
  * ``feedalign.policies.reference`` - reference strategies (copy | adapter disabled | cache);
  * ``feedalign.policies.tiny``      - tiny random models and local tokenizers for tests.

Submodules are imported on demand so that ``import feedalign.policies`` stays light.
"""
