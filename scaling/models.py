"""Schedules, node groups and scaling runs."""

from __future__ import annotations
