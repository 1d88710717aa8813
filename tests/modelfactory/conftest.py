"""The chain fixtures of tests/datanets (anvil per module, deployed protocol, directory store,
the ``datanet`` script in-process) for the ModelFactory job tests, and the tiny models' one
training thread."""

from collections.abc import Iterator

import pytest
import torch

from tests.datanets.conftest import (  # noqa: F401 - fixtures
    accounts,
    anvil,
    connected,
    datanet_cli,
    protocol,
    store,
    store_dir,
)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread; on a busy machine more threads spin at barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
