"""Pages of the scaling app: schedules, cluster actions, runs."""
