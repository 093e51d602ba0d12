"""The collector: ingest, storage, alarms, city cases and the command-center API."""
