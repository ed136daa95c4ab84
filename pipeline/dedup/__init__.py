"""Batch dedup of an image folder: exact and near duplicates, keeper-centred groups, actions."""

from pipeline.dedup.actions import ACTIONS
from pipeline.dedup.grouping import KEEP_RULES
from pipeline.dedup.job import DEFAULT_THRESHOLD, MIN_INLIERS, DedupOptions, DedupSummary, dedup_folder

__all__ = ["ACTIONS", "DEFAULT_THRESHOLD", "KEEP_RULES", "MIN_INLIERS", "DedupOptions", "DedupSummary", "dedup_folder"]
