"""Chains of copy edits: sampled step by step at the size each edit will produce, replayed exactly.

A chain is a list of (edit name, params) pairs. It survives a JSON round trip (tuples come back
as lists), and `apply_chain` on the same image and context gives the same pixels every time.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from copyscope.pipeline.augment.registry import EDITS, GROUPS, EditContext, apply_edit, get_edit, output_shape

Chain = list[tuple[str, dict]]


def resolve_edits(kinds: Iterable[str] | None = None) -> list[str]:
    """Edit names (sorted) named by `kinds`: edit names or group names; None means all."""
    if kinds is None:
        return sorted(EDITS)
    names: set[str] = set()
    for k in kinds:
        if k in GROUPS:
            names.update(n for n, e in EDITS.items() if e.group == k)
        elif k in EDITS:
            names.add(k)
        else:
            raise KeyError(f"unknown edit or group {k!r}; known groups: {', '.join(GROUPS)}; "
                           f"known edits: {', '.join(sorted(EDITS))}")
    return sorted(names)


def sample_edit(rng: np.random.Generator, name: str, height: int, width: int,
                other_keys: Sequence[str] = ()) -> dict:
    """Params of edit `name` for an image of (height, width); draws "other" from `other_keys`."""
    edit = get_edit(name)
    if not edit.needs_other:
        return edit.sample(rng, height, width)
    if not other_keys:
        raise ValueError(f"edit {name!r} needs other photos, but no other_keys were given")
    other = str(other_keys[int(rng.integers(len(other_keys)))])
    return {"other": other, **edit.sample(rng, height, width)}


def sample_chain(rng: np.random.Generator, height: int, width: int, n_edits: tuple[int, int] = (1, 4),
                 kinds: Iterable[str] | None = None, other_keys: Sequence[str] = ()) -> Chain:
    """A chain of n_edits[0]..n_edits[1] edits drawn uniformly from `kinds` (names or groups).

    Edits that need another photo are left out when `other_keys` is empty. Each edit's params are
    sampled for the size the chain so far produces.
    """
    names = [n for n in resolve_edits(kinds) if other_keys or not EDITS[n].needs_other]
    if not names:
        raise ValueError(f"no edit to sample from kinds={kinds!r} without other photos")
    chain: Chain = []
    for _ in range(int(rng.integers(n_edits[0], n_edits[1] + 1))):
        name = names[int(rng.integers(len(names)))]
        params = sample_edit(rng, name, height, width, other_keys)
        chain.append((name, params))
        height, width = output_shape(name, params, height, width)
    return chain


def chain_shape(chain: Iterable[Sequence], height: int, width: int) -> tuple[int, int]:
    """(h, w) that `apply_chain` returns for an input of (height, width)."""
    for name, params in chain:
        height, width = output_shape(name, params, height, width)
    return height, width


def apply_chain(image: np.ndarray, chain: Iterable[Sequence], ctx: EditContext | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 after every (name, params) of `chain` in order."""
    for name, params in chain:
        image = apply_edit(image, name, params, ctx)
    return image
