"""``feedalign iterate``: rounds of sampling the current policy, feedback from a judge, and
training through the one trainer, with an offline baseline and a report.

``config`` (the YAML sections), ``sampling`` (prompts as the model sees them, K samples),
``judges`` (text-task scorers, callables, reward models), ``human`` (people through
``feedalign serve``), ``feedback`` (feedback files with provenance), ``rounds`` and
``iterate`` (the stages, resumable), ``report`` (iterate_report.json and the plot).
Importing this package is light.
"""
