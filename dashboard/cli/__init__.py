"""``greenlight``: the command-line client of the REST API, for terminals and CI pipelines."""
