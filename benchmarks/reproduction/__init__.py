"""Issue 7: reproduce the paper's AB-vs-base comparisons at small scale (see ``benchmarks/reproduce.py``).

Modules: :mod:`.profiles` (named profiles and the rows they can run), :mod:`.runner` (run dirs,
training, probes), :mod:`.report` (tables, JSON, plots) and :mod:`.cli` (the command line).
"""
