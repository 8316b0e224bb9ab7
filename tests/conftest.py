"""Shared test options: ``--device`` (default ``cpu``) runs the same suite on a GPU."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for the tests (cpu, cuda, cuda:1)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The torch device the tests run on."""
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda given but CUDA is not available")
    return dev
