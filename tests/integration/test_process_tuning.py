"""Rule: process-wide tuning belongs to `tasks-api serve`, never to building an app.

`serve` freezes what start-up built and raises the collector's first threshold in each worker
(the pauses of full collections were most of p99 under load, docs/PERFORMANCE.md); an app a
test or an embedding program builds and serves leaves its process's collector as it was.
"""

import gc

import httpx

from service.config import Settings
from service.main import create_app, create_served_app
from tests.support.live import serving


def test_building_and_serving_an_app_leaves_the_garbage_collector_alone(
    settings: Settings,
) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    with serving(create_app(settings)) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == frozen


def test_the_app_serve_runs_tunes_its_process(settings: Settings) -> None:
    threshold = gc.get_threshold()
    try:
        create_served_app(settings)
        assert gc.get_threshold() == (10_000, 10, 10)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
