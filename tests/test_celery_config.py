"""The Celery configuration derived from settings."""

from __future__ import annotations

import pytest

from config.celery import celery_config, check_timeouts
from config.settings import Settings


def test_json_only_late_acks_prefetch_one_and_events() -> None:
    config = celery_config(Settings())
    assert config["accept_content"] == ["json"] == config["result_accept_content"]
    assert config["task_serializer"] == "json" == config["result_serializer"]
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_send_task_events"] and config["task_send_sent_event"]
    assert config["result_extended"] is False


def test_one_queue_per_lane() -> None:
    settings = Settings.model_validate({"lanes": {"otp": "codes", "bulk": "campaigns"}})
    config = celery_config(settings)
    queues = config["task_queues"]
    assert [queue.name for queue in queues] == ["codes", "default", "campaigns"]
    # each lane has its own exchange and key, so a message reaches one queue only
    assert [(q.exchange.name, q.routing_key) for q in queues] == [
        ("codes", "codes"),
        ("default", "default"),
        ("campaigns", "campaigns"),
    ]
    assert config["task_default_queue"] == "default"


def test_visibility_timeout_outlasts_any_countdown_and_task() -> None:
    settings = Settings()
    config = celery_config(settings)
    timeout_s = config["broker_transport_options"]["visibility_timeout"]
    assert timeout_s >= 2 * (settings.max_retry_countdown_s + settings.task_time_limit_s)


def test_a_too_short_visibility_timeout_is_refused_with_the_numbers() -> None:
    settings = Settings(visibility_timeout_s=600, max_retry_countdown_s=900)
    with pytest.raises(ValueError, match=r"visibility_timeout_s 600 is too short: .* 2040"):
        check_timeouts(settings)


def test_urls_come_from_settings_in_clear_only_here() -> None:
    settings = Settings(broker_url="redis://:pw@broker:6379/0")  # type: ignore[arg-type]
    assert celery_config(settings)["broker_url"] == "redis://:pw@broker:6379/0"
    assert "pw" not in repr(settings)


def test_every_task_sends_events_through_the_redacting_request() -> None:
    from celery.utils.imports import symbol_by_name

    from worker.producer import SEND_BATCH_TASK, SEND_TASK
    from worker.task_events import RedactingRequest, summarise_result
    from worker.tasks import app

    for name in (SEND_TASK, SEND_BATCH_TASK):
        assert issubclass(symbol_by_name(app.tasks[name].Request), RedactingRequest)
    # The summary a task-succeeded event carries in place of the result record
    record = "{'job_id': 'x', 'success': True, 'recipients': [{'phone_number': '+447700900123'}]}"
    assert summarise_result(record) == "<result success=True>"
    assert summarise_result('{"success": false, "recipients": []}') == "<result success=False>"
    assert summarise_result("None") is None
