"""Hyperparameter search (``seqsmith tune``) on Optuna: the search space (``space``), the study that runs
trials as trainings or decodings and survives kills (``study``), and what it writes (``summary``)."""
