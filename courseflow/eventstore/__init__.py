"""PostgreSQL: the append-only event log, its one reader, the locked write model and the migrations."""
