"""The hands-on migration, end to end (`rehost demo`, `make demo`)."""
