"""Restart counts: the one place their defaults live (the search settings and every fit read them)."""

#: Restarts of a law fitted once, for keeps: the chosen law's final refit, ``lawforge fit``,
#: human-law refits, :func:`lawforge.fit_law`, and :func:`lawforge.fitting.lm.fit_split`'s default.
FINAL_RESTARTS = 64
#: Restarts of a candidate during the search. With 6, a form is judged on a bad local optimum
#: about one time in five (moe, lr_bsz); 12 halves that at no measurable cost on small tasks.
SEARCH_RESTARTS = 12
#: Restarts of the runners-up refit, the extrapolation-shift fits and the report's human-law refit.
RANK_RESTARTS = 16
