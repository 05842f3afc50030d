"""Enrichment models: features, training, evaluation, versioned artefacts and scoring, the same
for every enricher (the `Enricher` kind of `cdp.components`)."""
