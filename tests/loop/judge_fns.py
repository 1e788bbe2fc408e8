"""Judges for the tests, imported as ``module:function`` by the callable judge."""


def shortness(prompts, completions):
    return {"short": [-float(len(c.split())) for c in completions]}


def rows_of_dicts(prompts, completions):
    return [{"short": -float(len(c))} for c in completions]


def wrong_length(prompts, completions):
    return {"short": [0.0]}
