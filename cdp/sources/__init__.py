"""Source connectors: importing records from other systems through the same identity resolution
as collected events. `spec` validates the `[[sources]]` entries, `mapping` turns a record into a
Segment message, `claim` keeps two syncs of one source apart, `sync` runs an import."""
