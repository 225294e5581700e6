"""Which arm pairs a multi-arm study shows on each item: the designs, in one place.

An *item* is one label and seed: every arm's image of it starts from the same
x_T and draws the same per-step noise. A design says which pairs of arms are
shown on each item:

* ``all_pairs``: every one of the K(K-1)/2 arm pairs on every item;
* ``reference``: each other arm against one reference arm (K-1 pairs per item);
* ``balanced_incomplete``: ``pairs_per_item`` of the K(K-1)/2 arm pairs on
  each item, rotating through a round-robin order of all pairs, so that each
  arm pair is shown on the same number of items (within one) and, over every
  K(K-1)/2 consecutive slots, each arm equally often. For large K, where
  every pair on every item costs too many answers.

Pure Python, no torch: the API, the statistics (power planning) and the
survey all read it.
"""
from __future__ import annotations

DESIGNS = ("all_pairs", "reference", "balanced_incomplete")
DEFAULT_DESIGN = "all_pairs"


def round_robin(k: int) -> list[tuple[int, int]]:
    """All pairs of k arms in the order of a round-robin tournament (circle method), each as (i, j) with i < j.

    Consecutive rounds use every arm once (twice-ish for odd k), so a prefix of
    this order spreads the arms evenly, which a cut-off rotation needs.
    """
    players = list(range(k)) + ([None] if k % 2 else [])
    n = len(players)
    out: list[tuple[int, int]] = []
    for _ in range(n - 1):
        for a in range(n // 2):
            i, j = players[a], players[n - 1 - a]
            if i is not None and j is not None:
                out.append((min(i, j), max(i, j)))
        players = [players[0], players[-1], *players[1:-1]]
    return out


def design_pairs(k: int, design: str = DEFAULT_DESIGN, reference: int = 0) -> list[tuple[int, int]]:
    """The arm pairs (i < j, by arm index) a design can show."""
    if k < 2:
        raise ValueError("a study compares at least two arms")
    if design not in DESIGNS:
        raise ValueError(f"design {design!r} is unknown; choose from {', '.join(DESIGNS)}")
    if design == "reference":
        if not 0 <= reference < k:
            raise ValueError(f"reference arm {reference} is not one of the {k} arms")
        return [(min(reference, j), max(reference, j)) for j in range(k) if j != reference]
    if design == "balanced_incomplete":
        return round_robin(k)
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def item_pairs(n_items: int, k: int, design: str = DEFAULT_DESIGN, *, reference: int = 0,
               pairs_per_item: int | None = None) -> list[list[tuple[int, int]]]:
    """For each item, the arm pairs it is shown with (in the design's order)."""
    pairs = design_pairs(k, design, reference)
    if design != "balanced_incomplete":
        return [list(pairs) for _ in range(n_items)]
    per = pairs_per_item or max(1, k // 2)
    if not 1 <= per <= len(pairs):
        raise ValueError(f"pairs_per_item must be between 1 and {len(pairs)} for {k} arms")
    # Item i takes the next `per` pairs of the rotation: over the items each pair comes up
    # floor or ceil of n_items * per / P times.
    return [[pairs[(i * per + t) % len(pairs)] for t in range(per)] for i in range(n_items)]
