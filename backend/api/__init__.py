"""The read API over the indexer's SQLite read model, and the contribution upload endpoint.

``python -m backend.api`` serves it (``OPENLEDGER_API_*`` settings); ``create_app`` builds it.
It never holds user keys: on-chain actions are signed by the user's wallet or the scripts.
"""
