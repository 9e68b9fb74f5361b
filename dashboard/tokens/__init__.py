"""Scoped API tokens: several per user, stored hashed, capped by scopes, namespaces and expiry."""
