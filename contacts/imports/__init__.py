"""The large CSV import path: read (encoding, delimiter, header), validate rows, stage them in a
temp table, then merge set-based in one transaction. See docs/imports.md."""
