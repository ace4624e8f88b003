"""The public JSON API (/api/v1/): events, contact upsert and lookup, with API-key auth."""
