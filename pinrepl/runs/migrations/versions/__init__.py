"""The revisions of pinrepl's own tables, oldest first: `v0001` (pinrepl 0.1.0's tables),
`v0002` (runs as records, SPEC 8), `v0003` (control: pauses, cancels, the listing's
indexes, SPEC 9)."""
