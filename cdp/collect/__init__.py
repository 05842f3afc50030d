"""The collection API: Segment-spec messages in, validated events out."""
