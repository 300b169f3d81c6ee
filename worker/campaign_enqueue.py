"""Putting a campaign's file onto the bulk lane: stage, then publish, both resumable.

**Stage.** The file is read as a stream, ``chunk_rows`` rows at a time. Each chunk's rows
are checked (:class:`~worker.campaign_file.RowChecker`), and its valid recipients are
stored in one pipelined round trip: one script a recipient records its number digest in
the campaign's ``seen`` hash (a number already there is a duplicate, sent once), stores
its job (the code encrypted, as for any job) and appends the job id to the campaign's list.
Then the chunk is *committed* (its counts and refused rows, in one script that applies a
chunk once). Nothing is sent yet: this is the cost preview, and ``--dry-run`` stops here.

**Publish.** Job ids are read back from the list in file order and published
``bulk_batch_size`` to an ``sms.send_batch`` task on the bulk lane (the campaign id goes
with it, so a paused campaign's batch is held after one read); a cursor in the campaign
records how far publishing got, batch by batch. One process publishes a campaign at a time
(a lock in Redis, which lapses if that process dies).

The producer holds one chunk at a time, so its memory does not grow with the file. A
crash at any point is resumed by running ``start`` again: committed chunks are skipped,
an interrupted chunk is redone (its recipients already stored are recognised, not counted
twice, and not lost), and publishing restarts at the cursor. At most the one batch in
flight at the crash is published twice: nobody is sent twice (a part is claimed once), but
if both copies run at the same moment, a recipient may end ``unknown`` although sent.
Two ``start`` processes of one campaign at once stage safely (a chunk's counts are committed
by whichever finishes it first), and the second is refused at publishing.

A campaign's jobs live ``SMSGW_JOB_TTL_S`` (7 days) from when they were stored (a resume
renews them): ``start`` refuses a pace that would take longer, and a job found gone still
gets an outcome (``expired``), so the campaign finishes.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import LockError
from redis.lock import Lock

from config.settings import Settings
from worker.campaign_file import InvalidRow, RowChecker, read_rows
from worker.campaigns import (
    Campaign,
    CampaignError,
    CampaignStore,
    campaign_job_id,
    number_digest,
    stage_argument,
)
from worker.crypto import Cipher
from worker.jobs import JOB_FORMAT_VERSION
from worker.keys import campaign_publish_lock_key
from worker.producer import SEND_BATCH_TASK, Publisher

__all__ = ["CampaignEnqueuer", "StageProgress"]

DEFAULT_CHUNK_ROWS = 1000
_PUBLISH_LOCK_S = 60  # renewed every 10 batches; a dead publisher's lock lapses after this
_MAX_CHECKERS = 4

_Rows = list[tuple[int, dict[str, str] | str]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A valid row made into its stored job (the code already encrypted)."""

    digest: str
    job_id: str
    argument: bytes  # the staging script's argument: digest, id and JSON, encoded
    pieces: int
    segments: int
    encoding: str


class _Preparer:
    """Checks a chunk's rows and builds each valid recipient's job (sent to checker processes).

    Args:
        campaign_id: The campaign.
        checker: The row checks.
        cipher: Encrypts per-recipient codes.
        base: The fields every job of the campaign shares.
    """

    def __init__(
        self, campaign_id: str, checker: RowChecker, cipher: Cipher, base: dict[str, Any]
    ) -> None:
        self.campaign_id = campaign_id
        self.checker = checker
        self.cipher = cipher
        self.base = base

    def prepare(self, rows: _Rows) -> list[_Prepared | InvalidRow]:
        enqueued_at = datetime.now(UTC).isoformat()
        prepared: list[_Prepared | InvalidRow] = []
        for checked in self.checker.check_chunk(rows):
            if isinstance(checked, InvalidRow):
                prepared.append(checked)
                continue
            job_id = campaign_job_id(self.campaign_id, checked.e164)
            message = {**self.base["message"], "message": checked.text}
            message["phone_numbers"] = [checked.e164]
            code = checked.code
            job = {
                **self.base,
                "id": job_id,
                "enqueued_at": enqueued_at,
                "message": message,
                "access_code_enc": self.cipher.encrypt(code) if code is not None else None,
            }
            digest = number_digest(checked.e164)
            job_json = json.dumps(job, ensure_ascii=False, separators=(",", ":"))
            prepared.append(
                _Prepared(
                    digest,
                    job_id,
                    stage_argument(digest, job_id, job_json),
                    checked.pieces,
                    checked.segments,
                    checked.encoding,
                )
            )
        return prepared


_preparer: _Preparer | None = None  # in a checker process: the campaign's preparer


def _start_preparer(preparer: _Preparer) -> None:
    global _preparer
    _preparer = preparer


def _prepare_in_child(rows: _Rows) -> list[_Prepared | InvalidRow]:
    assert _preparer is not None
    return _preparer.prepare(rows)


@dataclass(slots=True)
class StageProgress:
    """What staging has done so far (this run)."""

    rows: int = 0
    chunks: int = 0
    skipped_chunks: int = 0


class CampaignEnqueuer:
    """Stages and publishes one campaign's recipients.

    Args:
        store: Campaign state.
        publisher: The Celery app (``send_task``).
        settings: Lanes, batch size, job TTL.
        cipher: Encrypts per-recipient codes.
        chunk_rows: Rows read, checked and stored per round trip.
        checkers: Processes that check rows (phone-number parsing is most of the CPU a row
            costs) while this one stores; 0 checks in this process. Default: one per core.
    """

    def __init__(
        self,
        store: CampaignStore,
        publisher: Publisher,
        settings: Settings,
        cipher: Cipher,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        checkers: int | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._cipher = cipher
        self._chunk_rows = chunk_rows
        # Measured on 2 cores: one checker more than cores keeps them busy while this
        # process waits on Redis; on one core, checking here is as fast.
        cores = os.cpu_count() or 1
        self._checkers = min(_MAX_CHECKERS, cores + 1) if cores > 1 else 0
        if checkers is not None:
            self._checkers = checkers

    def stage(
        self,
        campaign: Campaign,
        checker: RowChecker,
        path: Path,
        *,
        on_invalid: Callable[[InvalidRow], None] | None = None,
        on_chunk: Callable[[StageProgress], None] | None = None,
    ) -> StageProgress:
        """Check and store every row of ``path`` not staged yet; mark the campaign staged.

        Args:
            campaign: The campaign (its ``chunks`` counter says where to resume).
            checker: The row checks and the template.
            path: The CSV or JSONL file (the same one, when resuming).
            on_invalid: Called with each refused row of the chunks staged now.
            on_chunk: Called after each chunk.
        """
        progress = StageProgress()
        done_chunks = campaign.count("chunks")
        preparer = _Preparer(campaign.id, checker, self._cipher, self._job_base(campaign))
        for index, rows, checked in self._checked_chunks(path, preparer, done_chunks):
            if checked is None:
                progress.skipped_chunks += 1
            else:
                self._stage_chunk(campaign.id, index, len(rows), checked, on_invalid)
                progress.chunks += 1
            progress.rows += len(rows)
            if on_chunk is not None:
                on_chunk(progress)
        self._store.mark_staged(campaign.id)
        return progress

    def _chunks(self, path: Path) -> Iterator[_Rows]:
        chunk: _Rows = []
        for item in read_rows(path):
            chunk.append(item)
            if len(chunk) >= self._chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _checked_chunks(
        self, path: Path, preparer: _Preparer, skip: int
    ) -> Iterator[tuple[int, _Rows, list[_Prepared | InvalidRow] | None]]:
        """(index, rows, checked rows or None for a chunk staged before), in file order.

        With checker processes, a few chunks are checked ahead while this process stores
        the previous one; at most ``2 x checkers`` chunks are in memory at once.
        """
        chunks = enumerate(self._chunks(path))
        if self._checkers < 1:
            for index, rows in chunks:
                yield index, rows, preparer.prepare(rows) if index >= skip else None
            return
        # fork is fastest; with other threads alive (a server in the same process) a child
        # could inherit a lock held mid-operation, so start clean processes instead.
        method = "fork" if threading.active_count() == 1 else "forkserver"
        pending: deque[tuple[int, _Rows, Future[list[_Prepared | InvalidRow]] | None]]
        pending = deque()
        with ProcessPoolExecutor(
            self._checkers,
            mp_context=multiprocessing.get_context(method),
            initializer=_start_preparer,
            initargs=(preparer,),
        ) as pool:
            for index, rows in chunks:
                future = pool.submit(_prepare_in_child, rows) if index >= skip else None
                pending.append((index, rows, future))
                if len(pending) > 2 * self._checkers:
                    first, first_rows, done = pending.popleft()
                    yield first, first_rows, done.result() if done else None
            while pending:
                first, first_rows, done = pending.popleft()
                yield first, first_rows, done.result() if done else None

    def _job_base(self, campaign: Campaign) -> dict[str, Any]:
        """The fields every job of the campaign shares (the format of :mod:`worker.jobs`)."""
        fields = campaign.fields
        deadline = fields.get("deadline") or None
        return {
            "version": JOB_FORMAT_VERSION,
            "lane": self._settings.lanes.bulk,
            "account": fields.get("account") or None,
            "identity_store": fields.get("identity_store") or None,
            "campaign": campaign.id,
            "message": {
                "reference_id": None,
                "max_length": int(fields.get("max_length") or self._settings.max_length),
                "ttl_s": None,
                "expires_at": deadline,
            },
        }

    def _stage_chunk(
        self,
        campaign_id: str,
        index: int,
        rows: int,
        prepared: list[_Prepared | InvalidRow],
        on_invalid: Callable[[InvalidRow], None] | None,
    ) -> None:
        counters: dict[str, int] = {"rows": rows}
        invalid: list[str] = []
        staged: list[_Prepared] = []
        in_chunk: set[str] = set()
        duplicates = 0
        for row in prepared:
            if isinstance(row, InvalidRow):
                invalid.append(
                    json.dumps({"line": row.line, "number": row.number, "reason": row.reason})
                )
                if on_invalid is not None:
                    on_invalid(row)
            elif row.digest in in_chunk:
                duplicates += 1
            else:
                in_chunk.add(row.digest)
                staged.append(row)
        answers = self._store.stage_chunk(
            campaign_id,
            index,
            [(row.job_id, row.argument) for row in staged],
            ttl_s=self._settings.job_ttl_s,
        )
        for row, answer in zip(staged, answers, strict=True):
            if answer == 0:
                duplicates += 1
                continue
            for name, value in (
                ("recipients", 1),
                ("pieces", row.pieces),
                ("segments", row.segments),
                (f"recipients:{row.encoding}", 1),
                (f"segments:{row.encoding}", row.segments),
            ):
                counters[name] = counters.get(name, 0) + value
        counters["invalid"] = len(invalid)
        counters["duplicates"] = duplicates
        self._store.commit_chunk(campaign_id, index + 1, counters, invalid)

    def publish(self, campaign_id: str, *, on_batch: Callable[[int], None] | None = None) -> int:
        """Publish every staged job not published yet, in file order; mark it enqueued.

        Returns:
            How many jobs this call published.

        Raises:
            CampaignError: The campaign is unknown or not fully staged.
        """
        campaign = self._store.require(campaign_id)
        if not campaign.staged:
            raise CampaignError(f"campaign {campaign_id} is not fully staged; run start again")
        lane = self._settings.lanes.bulk
        batch = self._settings.bulk_batch_size
        lock = self._store.redis.lock(
            campaign_publish_lock_key(campaign_id), timeout=_PUBLISH_LOCK_S, blocking=False
        )
        if not lock.acquire():
            raise CampaignError(
                f"campaign {campaign_id} is being published by another process; "
                f"try again in {_PUBLISH_LOCK_S} s if that process died"
            )
        try:
            # Read after taking the lock: the cursor another publisher left.
            position = self._store.require(campaign_id).count("published")
            # One broker connection for every batch, not one taken from the pool per task.
            with contextlib.ExitStack() as stack:
                options = _producer_options(self._publisher, stack)
                published = self._publish_from(
                    campaign_id, position, lane, batch, options, on_batch, lock
                )
            self._store.mark_enqueued(campaign_id)
        finally:
            with contextlib.suppress(LockError):
                lock.release()
        return published

    def _publish_from(
        self,
        campaign_id: str,
        position: int,
        lane: str,
        batch: int,
        options: dict[str, Any],
        on_batch: Callable[[int], None] | None,
        lock: Lock,
    ) -> int:
        published = 0
        kwargs = {"campaign": campaign_id}
        while True:
            ids = self._store.job_ids(campaign_id, position, batch * 10)
            if not ids:
                break
            if not lock.reacquire():  # still ours, for another _PUBLISH_LOCK_S
                raise CampaignError(f"lost the publishing lock of campaign {campaign_id}")
            for first in range(0, len(ids), batch):
                jobs = ids[first : first + batch]
                self._publisher.send_task(
                    SEND_BATCH_TASK, args=[jobs], kwargs=kwargs, queue=lane, **options
                )
                # The cursor moves with every batch: a crash re-publishes at most one.
                position += len(jobs)
                published += len(jobs)
                self._store.mark_published(campaign_id, position)
            if on_batch is not None:
                on_batch(position)
        return published


def _producer_options(publisher: Publisher, stack: contextlib.ExitStack) -> dict[str, Any]:
    """``send_task`` options that reuse one kombu producer, when the publisher is Celery."""
    acquire = getattr(publisher, "producer_or_acquire", None)
    if acquire is None:
        return {}
    return {"producer": stack.enter_context(acquire())}
