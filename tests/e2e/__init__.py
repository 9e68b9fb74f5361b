"""End-to-end tests: the whole stack, started the way ``make run`` starts it."""
