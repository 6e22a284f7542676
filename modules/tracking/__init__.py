"""Tracking: the MLflow client every step uses (`client`), and, apart from it, the operations of
the tracking server (`server`: start, stop, status, database init and upgrade). The client never
imports the server operations; both share the small store helpers (`store`)."""
