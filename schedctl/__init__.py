"""schedctl: the scheduler's command-line client (a thin layer over the HTTP API; it never touches the database)."""
