"""Segments and computed traits: conditions, their SQL, keeping memberships current."""
