"""The naive baseline: one plain Celery task per message, a synchronous HTTP post each.

What a first version of this product would be: ``send(to, text)`` posts to the provider
with ``urllib`` (a new connection per message) and returns its status; the worker runs
Celery's defaults (prefork pool, one child per CPU). Nothing else of smsgw is used.

Worker: ``NAIVE_BROKER_URL=... NAIVE_SANDBOX_URL=... celery -A benchmarks.naive worker
-Q naive``. Producer: :func:`create_app` with the same broker, then ``send_task``.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import urllib.request

from celery import Celery

QUEUE = "naive"
TASK = "naive.send"

_AUTH = "Basic " + base64.b64encode(b"sandbox1:sandbox-secret").decode()


def create_app(broker_url: str) -> Celery:
    """A plain Celery app on ``broker_url``: JSON, no result backend, default pool."""
    naive = Celery("naive", broker=broker_url)
    naive.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
    )
    return naive


app = create_app(os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/3"))


@app.task(name=TASK)
def send(to: str, text: str) -> str:
    """Post one SMS to the sandbox's Vonage API; return Vonage's status code."""
    form = {"from": "naive", "to": to, "text": text, "type": "text"}
    request = urllib.request.Request(
        f"{os.environ['NAIVE_SANDBOX_URL']}/sms/json",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Authorization": _AUTH},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        reply = json.load(response)
    status: str = reply["messages"][0]["status"]
    return status
