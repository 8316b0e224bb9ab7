"""Shared test options (``--device``, default ``cpu``, runs the same suite on a GPU) and fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from _system_helpers import B, V

from vpt_env import TransitionBatch, TransitionSampler
from vpt_env.data.scenes import SceneSource


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device for the tests (cpu, cuda, cuda:1)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The torch device the tests run on."""
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda given but CUDA is not available")
    return dev


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    results compared bit for bit, as in subprocess workers; tiny models gain nothing from threads
    on a shared 2-core machine (the probes ran 10x slower with two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def system_source() -> SceneSource:
    """16 scenes, 90% captioned (the default is 20%), so CLIP's annotation batch is not empty."""
    return SceneSource(n_images=16, caption_fraction=0.9)


@pytest.fixture(scope="module")
def system_data(system_source: SceneSource) -> tuple[TransitionBatch, list[str], int]:
    """A batch of the system tests: ``(B x V views of 16 px, caption table, number of classes)``."""
    sampler = TransitionSampler(system_source, view_size=16, seed=0)
    return sampler.sample(B, V), sampler.captions, len(system_source.classes)
