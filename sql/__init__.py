"""The schema migrations, `NNN_name.sql`, shipped in the wheel as the package `courseflow.sql`."""
