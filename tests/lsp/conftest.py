import shutil

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random-weight tiny model directory (loads in well under a second)."""
    from tealtab.engine.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def other_tiny_model(tiny_model, tmp_path_factory):
    """A second model directory (a copy): a different `model` setting."""
    target = tmp_path_factory.mktemp("tiny2") / "model"
    shutil.copytree(tiny_model, target)
    return target


@pytest.fixture
def options(tiny_model):
    """initializationOptions for the tiny model with short generations."""
    return {"model": str(tiny_model), "device": "cpu", "maxNewTokens": 6}


@pytest.fixture
def log_file(tmp_path, request):
    """The server's log; printed when the test fails."""
    path = tmp_path / "server.log"
    yield path
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and path.exists():
        print("----- server log -----")
        print(path.read_text(errors="replace")[-20000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.rep_call = report
    return report
