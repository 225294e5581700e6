"""Looking inside guidance: the paper's Figures 2 to 5 and its scale tables, as tools (Kawar et al., Sec. 5.1, App. E).

Above ``sampling``, ``robustness`` and ``evaluation``; nothing below imports it.

torch-free (the API validates requests with these):
    kinds.py       the analysis names and their implementations (lazy targets): the one list
    requests.py    the one resolver of analysis requests (API, CLI, ``rguide viz reproduce``)
    inputs.py      uploaded PNGs -> pixels of a preset's shape; held-out picks
    render.py      labelled picture grids (Pillow's ImageDraw), min-max normalisation
    intervals.py   means and proportions with 95% intervals
    sidecar.py     an analysis's files + its JSON sidecar; reproduction from a sidecar

torch:
    common.py      loading inputs, classifiers and the judge network
    gradients.py   Figure 3: input gradients of log p(y | x_t, t) and their alignment numbers
    maximize.py    Figure 4: targeted PGD at t = 0 and how often another network reads the target
    trajectory.py  Figure 5: predicted x_0 along a guided run (also the generation API's previews)
    compare.py     Figure 2: seed-matched comparison sheets
    sweep.py       Tables 5 and 6: quality per method and scale, as curves and the paper's table

Every analysis is ``run(settings, inputs, progress=...) -> Output``: PNG bytes
and a sidecar (settings, seeds, provenance, summary numbers, file hashes)
from which ``sidecar.reproduce`` makes the same bytes again.
"""
