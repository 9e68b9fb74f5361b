"""Scheduled scaling of applications and node groups."""
