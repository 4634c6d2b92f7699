"""Serving the lakehouse to SQL clients: Spark's Thrift JDBC/ODBC server (`ulv-spark sql-server`)."""
