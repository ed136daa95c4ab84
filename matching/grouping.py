"""Dedup groups: exact clusters by pixel digest, then keeper-centred stars over verified near-copy edges.

Plain connected components would chain: A~B and B~C would put A and C in one group though nothing
links them. Here every group is a *centre* (its keeper) and files each verified directly against that
centre: centres are picked greedily in keeper order as a maximal independent set of the edge graph
(a file becomes a centre unless an edge joins it to an earlier centre), and every other file with
edges joins the best-ranked centre it has an edge to. A file left alone that way (all its links go to
members of groups: a crop of a photo whose keeper is a screenshot of that photo) may join through its
strongest link to a member, if that link scores at least `join_at`. A member is therefore one verified
link from its keeper, or two when its own link (to the member it joined through) is strong, and the
keeper ranks first in its group.

Groups are built from the links worth a review; `safe_members` tells which members may be acted on:
those whose every link on the way to the keeper is exact or scores at least the act threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEEP_RULES = ("largest", "oldest", "newest", "path")


@dataclass(frozen=True)
class FileInfo:
    """What the keeper rules look at. pixels: width * height (0 if unknown); reference: in the index."""

    path: str
    bytes: int
    mtime_ns: int
    pixels: int = 0
    reference: bool = False


def keeper_ranks(files: list[FileInfo], rule: str) -> np.ndarray:
    """(N,) int64 rank of each file as a keeper, 0 = best. References always rank before folder files.

    largest: most pixels, then most bytes; oldest / newest: mtime; path: lexicographically first.
    Ties are broken by path, so ranks are deterministic.
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"unknown keep rule {rule!r}; known: {', '.join(KEEP_RULES)}")
    keys = {
        "largest": lambda f: (-f.pixels, -f.bytes),
        "oldest": lambda f: (f.mtime_ns,),
        "newest": lambda f: (-f.mtime_ns,),
        "path": lambda f: (),
    }[rule]
    order = sorted(range(len(files)), key=lambda i: (not files[i].reference, *keys(files[i]), files[i].path))
    ranks = np.empty(len(files), np.int64)
    ranks[order] = np.arange(len(files))
    return ranks


def exact_clusters(digests: list[str]) -> list[list[int]]:
    """Rows sharing a non-empty digest -> clusters of >= 2 rows (each sorted, clusters by first row)."""
    by_digest: dict[str, list[int]] = {}
    for row, digest in enumerate(digests):
        if digest:
            by_digest.setdefault(digest, []).append(row)
    return sorted(rows for rows in by_digest.values() if len(rows) > 1)


@dataclass(frozen=True)
class Star:
    """nodes: the centre (keeper) first, then the members by rank; parent: member -> the node its link goes
    to (the centre, or for a member joined through another one, that member)."""

    nodes: list[int]
    parent: dict[int, int]


def star_groups(ranks: np.ndarray, a: np.ndarray, b: np.ndarray, strength: np.ndarray | None = None,
                join_at: float | None = None) -> list[Star]:
    """Nodes 0..N-1 ranked by `ranks` (0 = best keeper), undirected edges (E,) a--b -> groups of >= 2
    nodes, each member joined to its centre by an edge; with (E,) `strength` and `join_at`, also a node that
    no centre took, joined to a member by its strongest edge to one if that edge's strength is >= join_at.
    """
    n = len(ranks)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ends = np.concatenate([a, b])
    other = np.concatenate([b, a])
    order = np.argsort(ends, kind="stable")
    ends, other = ends[order], other[order]
    start = np.searchsorted(ends, np.arange(n + 1))
    centre = np.zeros(n, bool)
    blocked = np.zeros(n, bool)
    for v in np.argsort(ranks, kind="stable"):
        if blocked[v] or start[v] == start[v + 1]:
            continue
        centre[v] = True
        blocked[other[start[v]:start[v + 1]]] = True
    parent = _best_link(ends, other, ~centre[ends] & centre[other], ranks[other])
    hosted = np.zeros(n, bool)
    hosted[list(parent.values())] = True
    if join_at is not None:
        if strength is None:
            raise ValueError("join_at needs the edges' strength")
        weight = np.concatenate([strength, strength])[order]
        alone = centre & ~hosted
        via = alone[ends] & ~centre[other] & (weight >= join_at)
        parent.update(_best_link(ends, other, via, -weight))
    groups: dict[int, Star] = {int(c): Star([int(c)], {}) for c in np.flatnonzero(centre)}
    for m in sorted(parent, key=lambda v: ranks[v]):
        host = parent[m]
        centre_of = host if centre[host] else parent[host]
        groups[centre_of].nodes.append(m)
        groups[centre_of].parent[m] = host
    for m in parent:
        groups.pop(m, None)  # a lone centre that joined a group through a member
    out = [g for g in groups.values() if len(g.nodes) > 1]
    return sorted(out, key=lambda g: ranks[g.nodes[0]])


def _best_link(ends: np.ndarray, other: np.ndarray, keep: np.ndarray, cost: np.ndarray) -> dict[int, int]:
    """Among the directed edges ends -> other where `keep`, each end's edge of least `cost` -> {end: other}."""
    end, to, cost = ends[keep], other[keep], cost[keep]
    best = np.lexsort((cost, end))
    end, to = end[best], to[best]
    first = np.ones(len(end), bool)
    first[1:] = end[1:] != end[:-1]
    return {int(m): int(h) for m, h in zip(end[first], to[first])}


@dataclass(frozen=True)
class Link:
    """Why `path` is in its group: it is a `kind` ("exact" or "near") copy of `linked_to`, with `score`."""

    path: str
    linked_to: str
    score: float
    kind: str


@dataclass(frozen=True)
class Group:
    """members: paths relative to the folder (references as "index:<id>"), keeper first; one link per
    other member."""

    members: list[str]
    links: list[Link]


def link_is_safe(link: Link, act_threshold: float) -> bool:
    """An exact link (identical pixels), or a near link whose score is >= act_threshold."""
    return link.kind == "exact" or link.score >= act_threshold


def safe_members(group: Group, act_threshold: float) -> list[bool]:
    """(M,) per member, keeper first (always True): every link on its path to the keeper is safe.

    A member's path follows its link to `linked_to`, then that member's link, up to the keeper (an
    exact copy of a near copy is only as safe as the near link).
    """
    link_of = {link.path: link for link in group.links}
    keeper = group.members[0]

    def safe(path: str) -> bool:
        for _ in range(len(group.members)):
            if path == keeper:
                return True
            link = link_of[path]
            if not link_is_safe(link, act_threshold):
                return False
            path = link.linked_to
        raise ValueError(f"the links of {path!r} do not lead to the keeper {keeper!r}")

    return [safe(m) for m in group.members]
