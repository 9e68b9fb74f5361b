"""The audit trail: who did what, when and from where, recorded append-only (see :func:`record`)."""
