"""The public signatures, pinned for ``mypy --strict`` (not collected by pytest).

Each public method of the async client and handle, and of their blocking twins, is assigned
to a Protocol spelling out its parameters; one Protocol, generic in what the call returns,
serves both twins, so a parameter that changes on one side only fails type checking.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import skala_async
import skala_async.sync
from skala_async import (
    BulkInputs,
    BulkReport,
    BulkResult,
    FileLike,
    PollPolicy,
    ProgressCallback,
    RetryPolicy,
    Ticket,
    TicketDraft,
    TicketHandle,
    Timeouts,
)
from skala_async.sync import SyncTicketHandle

R_co = TypeVar("R_co", covariant=True)
Async = Coroutine[Any, Any, R_co]


class CreateTicket(Protocol[R_co]):
    def __call__(
        self,
        customer_id: str | uuid.UUID,
        summary: str,
        description: str,
        files: FileLike | Iterable[FileLike] = ...,
        *,
        progress: ProgressCallback | None = ...,
        timeout: float | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> R_co: ...


class Submit(Protocol[R_co]):
    def __call__(
        self,
        draft: TicketDraft,
        *,
        progress: ProgressCallback | None = ...,
        timeout: float | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> R_co: ...


class GetTicket(Protocol[R_co]):
    def __call__(
        self,
        ticket_id: uuid.UUID | str,
        *,
        timeout: float | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> R_co: ...


class CreateAndWait(Protocol[R_co]):
    def __call__(
        self,
        customer_id: str | uuid.UUID,
        summary: str,
        description: str,
        files: FileLike | Iterable[FileLike] = ...,
        *,
        timeout: float | None = ...,
        raise_on_failure: bool = ...,
        progress: ProgressCallback | None = ...,
        retry: RetryPolicy | None = ...,
        poll: PollPolicy | None = ...,
    ) -> R_co: ...


class WithOptions(Protocol[R_co]):
    def __call__(
        self,
        *,
        timeout: float | Timeouts | None = ...,
        retry: RetryPolicy | None = ...,
        poll: PollPolicy | None = ...,
    ) -> R_co: ...


class HandleOf(Protocol[R_co]):
    def __call__(self, ticket_id: uuid.UUID | str) -> R_co: ...


class Resume(Protocol[R_co]):
    def __call__(self, token: str) -> R_co: ...


class SubmitMany(Protocol[R_co]):
    def __call__(
        self,
        drafts: BulkInputs,
        *,
        concurrency: int = ...,
        journal: str | os.PathLike[str] | None = ...,
        wait: bool = ...,
        wait_timeout: float | None = ...,
        resend_uncertain: bool = ...,
    ) -> R_co: ...


class CreateMany(Protocol[R_co]):
    def __call__(
        self,
        drafts: BulkInputs,
        *,
        progress: bool = ...,
        concurrency: int = ...,
        journal: str | os.PathLike[str] | None = ...,
        wait: bool = ...,
        wait_timeout: float | None = ...,
        resend_uncertain: bool = ...,
    ) -> R_co: ...


class WaitUntilCreated(Protocol[R_co]):
    def __call__(
        self,
        timeout: float | None = ...,
        *,
        raise_on_failure: bool = ...,
        poll: PollPolicy | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> R_co: ...


class Watch(Protocol[R_co]):
    def __call__(
        self,
        timeout: float | None = ...,
        *,
        poll: PollPolicy | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> R_co: ...


class Call(Protocol[R_co]):
    def __call__(self) -> R_co: ...


class MakeClient(Protocol[R_co]):
    """``from_env``: every argument of the constructor, by keyword."""

    def __call__(
        self,
        *,
        client_id: str | None = ...,
        client_secret: str | None = ...,
        token: str | None = ...,
        base_url: str = ...,
        timeouts: Timeouts | None = ...,
        retry: RetryPolicy | None = ...,
        poll: PollPolicy | None = ...,
        max_concurrent_polls: int = ...,
        user_agent: str | None = ...,
        transport: skala_async.Transport | None = ...,
    ) -> R_co: ...


def async_client(client: skala_async.SkalaClient) -> None:
    create: CreateTicket[Async[TicketHandle]] = client.create_ticket
    submit: Submit[Async[TicketHandle]] = client.submit
    get: GetTicket[Async[Ticket]] = client.get_ticket
    both: CreateAndWait[Async[Ticket]] = client.create_and_wait
    view: WithOptions[skala_async.SkalaClient] = client.with_options
    handle: HandleOf[TicketHandle] = client.ticket_handle
    resume: Resume[TicketHandle] = client.resume
    many: SubmitMany[AsyncIterator[BulkResult]] = client.submit_many
    report: CreateMany[Async[BulkReport]] = client.create_many
    close: Call[Async[None]] = client.close
    env: MakeClient[skala_async.SkalaClient] = skala_async.SkalaClient.from_env
    del create, submit, get, both, view, handle, resume, many, report, close, env


def sync_client(client: skala_async.sync.SkalaClient) -> None:
    create: CreateTicket[SyncTicketHandle] = client.create_ticket
    submit: Submit[SyncTicketHandle] = client.submit
    get: GetTicket[Ticket] = client.get_ticket
    both: CreateAndWait[Ticket] = client.create_and_wait
    view: WithOptions[skala_async.sync.SkalaClient] = client.with_options
    handle: HandleOf[SyncTicketHandle] = client.ticket_handle
    resume: Resume[SyncTicketHandle] = client.resume
    many: SubmitMany[Iterator[BulkResult]] = client.submit_many
    report: CreateMany[BulkReport] = client.create_many
    close: Call[None] = client.close
    env: MakeClient[skala_async.sync.SkalaClient] = skala_async.sync.SkalaClient.from_env
    del create, submit, get, both, view, handle, resume, many, report, close, env


def async_handle(handle: TicketHandle) -> None:
    wait: WaitUntilCreated[Coroutine[Any, Any, Ticket]] = handle.wait_until_created
    watch: Watch[AsyncIterator[Ticket]] = handle.watch
    refresh: Call[Async[Ticket]] = handle.refresh
    done: Call[bool] = handle.done
    token: Call[str] = handle.resume_token
    seen: tuple[uuid.UUID, Ticket | None, int] = (handle.ticket_id, handle.ticket, handle.polls)
    del wait, watch, refresh, done, token, seen


def sync_handle(handle: SyncTicketHandle) -> None:
    wait: WaitUntilCreated[Ticket] = handle.wait_until_created
    watch: Watch[Iterator[Ticket]] = handle.watch
    refresh: Call[Ticket] = handle.refresh
    done: Call[bool] = handle.done
    token: Call[str] = handle.resume_token
    seen: tuple[uuid.UUID, Ticket | None, int] = (handle.ticket_id, handle.ticket, handle.polls)
    del wait, watch, refresh, done, token, seen
