import pytest


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> str:
    """One feature cache for the session's command-line runs, so that each data set's images
    are encoded once; a test of the cache itself makes its own, cold one."""
    return str(tmp_path_factory.mktemp("feature-cache"))
