"""Patient records: registration, search, chart, and who may see them."""
