"""Ingestion: storing messages durably and applying them to profiles."""
