"""Chain events -> SQLite: the read model of the API, the dashboard and auditors.

``python -m backend.indexer --db PATH --deployments FILE --rpc URL`` follows a deployment; in
Python, :class:`~backend.indexer.sync.Indexer` (``sync_once`` / ``run_forever``).
"""
