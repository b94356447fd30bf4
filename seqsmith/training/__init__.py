"""Training: the loop (``trainer``) and what it runs, through one interface each.

``objective`` is the plug-in interface (units, counts, losses; ``mle`` is the default objective),
``validation`` the dev-set figures, ``checkpoint`` the atomic checkpoints of every unit, ``optim`` the
optimizers and learning-rate schedules, ``losses`` the loss pieces objectives share. See docs/objectives.md.
"""
