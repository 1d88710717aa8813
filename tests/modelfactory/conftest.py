"""The chain fixtures of tests/datanets (anvil per module, deployed protocol, directory store,
the ``datanet`` script in-process) for the ModelFactory job tests."""

from tests.datanets.conftest import (  # noqa: F401 - fixtures
    accounts,
    anvil,
    connected,
    datanet_cli,
    protocol,
    store,
    store_dir,
)
