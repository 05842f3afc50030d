"""Offers, content, decision strategies and the decision pipeline: next-best-offers."""
