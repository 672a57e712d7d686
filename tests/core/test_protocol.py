"""The pure core (``_protocol``): validation, request descriptions, response parsing, retry rules.

Everything here is synchronous and offline. Big files are sparse (``truncate``), so the
25 MiB / 50 MiB limits are checked without writing real data.
"""

from __future__ import annotations

import base64
import email.utils
import http
import io
import json
import os
import pathlib
import time
import uuid
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from skala_async import _protocol
from skala_async._limits import (
    ALLOWED_EXTENSIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_SUMMARY_CHARS,
    MAX_TOTAL_BYTES,
)
from skala_async._protocol import (
    MAX_RESPONSE_BYTES,
    RawResponse,
    Request,
    TokenInfo,
    check_draft,
    clean_filename,
    create_may_be_resent,
    create_request,
    error_for,
    form_body,
    get_request,
    is_auth_failure,
    parse_retry_after,
    parse_ticket,
    parse_token,
    read_may_be_resent,
    server_delay,
    ticket_id_of,
    token_request,
    validate_draft,
)
from skala_async._wire import Operation
from skala_async.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    SkalaError,
    SupportTicketsNotEnabledError,
    TicketNotFoundError,
    TransportError,
    UnexpectedResponseError,
    ValidationError,
)
from skala_async.models import Attachment, Ticket, TicketDraft, TicketStatus

CID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
TID = "0b6f1c2e-7d39-4f5e-9a43-52c1f0e9d8a7"


def draft(**kw: object) -> TicketDraft:
    values: dict[str, object] = {
        "customer_id": CID,
        "summary": "Card top-up not credited",
        "description": "I topped up 100 USD yesterday and it never arrived.",
    }
    values.update(kw)
    return TicketDraft(**values)  # type: ignore[arg-type]


def problems_of(**kw: object) -> list[str]:
    return validate_draft(draft(**kw))


def sparse(path: os.PathLike[str] | str, size: int) -> str:
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)
    return os.fspath(path)


def headers(**items: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in items.items()}))


def response(
    status: int,
    body: bytes | dict[str, object] | list[object] = b"",
    hdrs: Mapping[str, str] | None = None,
    *,
    truncated: bool = False,
) -> RawResponse:
    raw = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    return RawResponse(status, CIMultiDictProxy(CIMultiDict(hdrs or {})), raw, truncated)


CREATE = Request(Operation.CREATE, method="POST", path="/api/v1/supportTickets/")


# =========================================================================== validation


class TestCustomerId:
    @pytest.mark.parametrize(
        "cid", [CID, CID.upper(), f"  {CID}  ", uuid.UUID(CID)], ids=["lower", "upper", "ws", "obj"]
    )
    def test_valid(self, cid: object) -> None:
        assert problems_of(customer_id=cid) == []

    @pytest.mark.parametrize("cid", ["", "not-a-uuid", CID[:-1], CID + "0", "12345"])
    def test_not_a_uuid(self, cid: str) -> None:
        problems = problems_of(customer_id=cid)
        assert len(problems) == 1
        assert problems[0].startswith("customer_id:")
        assert "not a UUID" in problems[0]

    @pytest.mark.parametrize(
        ("cid", "type_name"), [(123, "int"), (None, "NoneType"), (CID.encode(), "bytes")]
    )
    def test_wrong_type(self, cid: object, type_name: str) -> None:
        problems = problems_of(customer_id=cid)
        assert problems == [f"customer_id: must be a UUID string, not {type_name}"]


LINE_BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
]


class TestSummary:
    def test_empty(self) -> None:
        assert problems_of(summary="") == ["summary: must not be empty"]

    @pytest.mark.parametrize("blank", [" ", "   ", "\t", "\u3000", "\xa0 "])
    def test_whitespace_only(self, blank: str) -> None:
        assert problems_of(summary=blank) == ["summary: must not be empty"]

    def test_240_chars_ok_241_rejected(self) -> None:
        assert problems_of(summary="x" * MAX_SUMMARY_CHARS) == []
        problems = problems_of(summary="x" * (MAX_SUMMARY_CHARS + 1))
        assert problems == ["summary: must be at most 240 characters (got 241)"]

    def test_length_is_counted_in_characters_not_bytes(self) -> None:
        # 240 "é" are 480 UTF-8 bytes but 240 characters: allowed.
        assert problems_of(summary="é" * 240) == []
        assert len(problems_of(summary="é" * 241)) == 1

    @pytest.mark.parametrize("brk", LINE_BREAKS, ids=[repr(b) for b in LINE_BREAKS])
    def test_every_kind_of_line_break_rejected(self, brk: str) -> None:
        problems = problems_of(summary=f"first line{brk}second line")
        assert problems == ["summary: must be a single line (no line breaks)"]

    def test_nul_rejected(self) -> None:
        assert problems_of(summary="a\x00b") == ["summary: must not contain NUL characters"]

    def test_not_a_string(self) -> None:
        assert problems_of(summary=None) == ["summary: must be a string, not NoneType"]
        assert problems_of(summary=42) == ["summary: must be a string, not int"]

    def test_line_break_only_reports_both_problems(self) -> None:
        problems = problems_of(summary="\n")
        assert sorted(problems) == [
            "summary: must be a single line (no line breaks)",
            "summary: must not be empty",
        ]


class TestDescription:
    def test_empty(self) -> None:
        assert problems_of(description="") == ["description: must not be empty"]
        assert problems_of(description=" \n\t ") == ["description: must not be empty"]

    def test_5000_ok_5001_rejected(self) -> None:
        assert problems_of(description="y" * MAX_DESCRIPTION_CHARS) == []
        problems = problems_of(description="y" * (MAX_DESCRIPTION_CHARS + 1))
        assert problems == ["description: must be at most 5000 characters (got 5001)"]

    @pytest.mark.parametrize("brk", LINE_BREAKS, ids=[repr(b) for b in LINE_BREAKS])
    def test_line_breaks_allowed(self, brk: str) -> None:
        assert problems_of(description=f"line one{brk}line two") == []

    def test_nul_rejected(self) -> None:
        assert problems_of(description="a\x00b") == ["description: must not contain NUL characters"]


class TestFiles:
    def test_five_files_ok_six_rejected(self) -> None:
        five = [Attachment.from_bytes(b"x", filename=f"f{i}.png") for i in range(MAX_FILES)]
        assert problems_of(files=five) == []
        six = [*five, Attachment.from_bytes(b"x", filename="f5.png")]
        assert problems_of(files=six) == ["files: at most 5 attachments (got 6)"]

    def test_no_files_ok(self) -> None:
        assert problems_of(files=[]) == []

    def test_file_exactly_25_mib_ok(self, tmp_path: os.PathLike[str]) -> None:
        path = sparse(os.path.join(tmp_path, "big.mp4"), MAX_FILE_BYTES)
        assert problems_of(files=[path]) == []

    def test_file_one_byte_over_25_mib_rejected(self, tmp_path: os.PathLike[str]) -> None:
        path = sparse(os.path.join(tmp_path, "big.mp4"), MAX_FILE_BYTES + 1)
        problems = problems_of(files=[path])
        assert len(problems) == 1
        assert problems[0].startswith("files[0]: 'big.mp4' is 25.0 MiB")
        assert "limit per file" in problems[0]

    def test_total_exactly_50_mib_ok(self, tmp_path: os.PathLike[str]) -> None:
        a = sparse(os.path.join(tmp_path, "a.mov"), MAX_FILE_BYTES)
        b = sparse(os.path.join(tmp_path, "b.mov"), MAX_TOTAL_BYTES - MAX_FILE_BYTES)
        assert problems_of(files=[a, b]) == []

    def test_total_over_50_mib_rejected(self, tmp_path: os.PathLike[str]) -> None:
        a = sparse(os.path.join(tmp_path, "a.mov"), MAX_FILE_BYTES)
        b = sparse(os.path.join(tmp_path, "b.mov"), MAX_FILE_BYTES)
        c = sparse(os.path.join(tmp_path, "c.png"), 1)
        problems = problems_of(files=[a, b, c])
        assert len(problems) == 1
        assert problems[0].startswith("files: 50.0 MiB together")
        assert "limit" in problems[0]

    def test_per_file_and_total_reported_together(self, tmp_path: os.PathLike[str]) -> None:
        a = sparse(os.path.join(tmp_path, "a.webm"), MAX_FILE_BYTES + 1)
        b = sparse(os.path.join(tmp_path, "b.webm"), MAX_FILE_BYTES + 1)
        problems = problems_of(files=[a, b])
        assert [p.split(":")[0] for p in problems] == ["files[0]", "files[1]", "files"]

    @pytest.mark.parametrize("ext", sorted(ALLOWED_EXTENSIONS))
    def test_allowed_extensions(self, ext: str) -> None:
        att = Attachment.from_bytes(b"x", filename=f"file.{ext}")
        assert problems_of(files=[att]) == []

    @pytest.mark.parametrize("name", ["scan.PDF", "Photo.JpEg", "clip.MOV"])
    def test_extension_case_insensitive(self, name: str) -> None:
        assert problems_of(files=[Attachment.from_bytes(b"x", filename=name)]) == []

    def test_extension_case_insensitive_from_disk(self, tmp_path: os.PathLike[str]) -> None:
        path = sparse(os.path.join(tmp_path, "SCAN.PDF"), 10)
        assert problems_of(files=[path]) == []

    @pytest.mark.parametrize(
        ("name", "shown"),
        [
            ("virus.exe", ".exe"),
            ("notes.txt", ".txt"),
            ("anim.gif", ".gif"),
            ("report.pdf.zip", ".zip"),
            ("README", "no extension"),
            (".pdf", "no extension"),
            ("trailingdot.", "no extension"),
        ],
    )
    def test_disallowed_or_missing_extension(self, name: str, shown: str) -> None:
        problems = problems_of(files=[Attachment.from_bytes(b"x", filename=name)])
        assert len(problems) == 1
        assert problems[0].startswith(f"files[0]: {name!r} has {shown}; allowed extensions are")
        assert "pdf" in problems[0]

    def test_file_without_a_name(self) -> None:
        problems = problems_of(files=[Attachment.from_bytes(b"x", filename="")])
        assert problems == [
            "files[0]: needs a file name; give one with "
            'Attachment.from_bytes(data, filename="receipt.pdf")'
        ]

    def test_file_object_without_a_name_says_how_to_name_it(self) -> None:
        problems = problems_of(files=[io.BytesIO(b"%PDF")])
        assert problems == [
            "files[0]: needs a file name; give one with "
            'Attachment.from_file(f, filename="receipt.pdf")'
        ]
        # ... and the way it names works.
        named = Attachment.from_file(io.BytesIO(b"%PDF"), filename="receipt.pdf")
        assert problems_of(files=[named]) == []

    def test_two_files_of_one_name_are_refused(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        (tmp_path / "a" / "Scan.pdf").write_bytes(b"1")
        (tmp_path / "b" / "scan.PDF").write_bytes(b"2")
        problems = problems_of(
            files=[tmp_path / "a" / "Scan.pdf", tmp_path / "b" / "scan.PDF", "other.pdf"]
        )
        assert problems == [
            "files[1]: 'scan.PDF' is also the name of files[0] (names are compared ignoring "
            "case); give each attachment its own name with "
            'Attachment.from_path(path, filename="receipt.pdf")',
            "files[2]: 'other.pdf' does not exist",
        ]

    def test_missing_path(self, tmp_path: os.PathLike[str]) -> None:
        problems = problems_of(files=[os.path.join(tmp_path, "nope.pdf")])
        assert problems == ["files[0]: 'nope.pdf' does not exist"]

    def test_directory(self, tmp_path: os.PathLike[str]) -> None:
        d = os.path.join(tmp_path, "folder.pdf")
        os.mkdir(d)
        problems = problems_of(files=[d])
        assert problems == ["files[0]: 'folder.pdf' is not a regular file"]

    @pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
    )
    def test_unreadable_file(self, tmp_path: os.PathLike[str]) -> None:
        path = sparse(os.path.join(tmp_path, "secret.pdf"), 10)
        os.chmod(path, 0)
        try:
            problems = problems_of(files=[path])
        finally:
            os.chmod(path, 0o600)
        assert problems == ["files[0]: 'secret.pdf' is not readable"]

    def test_path_whose_stat_fails(self, tmp_path: os.PathLike[str]) -> None:
        # A path "through" a regular file: stat fails with ENOTDIR, not ENOENT. Works as root.
        not_a_dir = sparse(os.path.join(tmp_path, "plain.pdf"), 1)
        problems = problems_of(files=[os.path.join(not_a_dir, "inner.pdf")])
        assert len(problems) == 1
        assert problems[0].startswith("files[0]: 'inner.pdf' cannot be read")

    def test_non_seekable_file_object(self) -> None:
        class Pipe(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return False

        with Pipe() as f:
            att = Attachment.from_file(f, filename="stream.pdf")  # type: ignore[arg-type]
            problems = problems_of(files=[att])
        assert problems == ["files[0]: 'stream.pdf' is not a seekable binary file"]

    def test_validation_uses_basename(self) -> None:
        att = Attachment.from_bytes(b"x", filename="C:\\Users\\me\\Desktop\\virus.exe")
        problems = problems_of(files=[att])
        assert len(problems) == 1
        assert "'virus.exe'" in problems[0]
        assert "Users" not in problems[0]


class TestValidationError:
    def test_every_problem_listed_at_once(self) -> None:
        bad = draft(
            customer_id="nope",
            summary="",
            description="z" * (MAX_DESCRIPTION_CHARS + 1),
            files=[Attachment.from_bytes(b"MZ", filename="tool.exe")],
        )
        with pytest.raises(ValidationError) as info:
            check_draft(bad)
        err = info.value
        assert len(err.problems) == 4
        assert [p.split(":")[0] for p in err.problems] == [
            "customer_id",
            "summary",
            "description",
            "files[0]",
        ]
        assert "4 problems" in str(err)
        for p in err.problems:
            assert p in str(err)

    def test_is_skala_error_and_value_error(self) -> None:
        with pytest.raises(ValidationError) as info:
            check_draft(draft(summary=""))
        assert isinstance(info.value, SkalaError)
        assert isinstance(info.value, ValueError)
        assert info.value.problems == ("summary: must not be empty",)
        assert "1 problem" in str(info.value)

    def test_valid_draft_does_not_raise(self) -> None:
        check_draft(draft())

    def test_create_request_validates_first(self) -> None:
        with pytest.raises(ValidationError):
            create_request(draft(customer_id="x"))


# --------------------------------------------------------------------------- hypothesis

_SPLITLINES_BREAK = st.sampled_from(LINE_BREAKS)
_summary = st.one_of(
    st.text(max_size=60),
    st.text(min_size=230, max_size=260),
    st.builds(
        lambda a, b, c: a + b + c, st.text(max_size=20), _SPLITLINES_BREAK, st.text(max_size=20)
    ),
)
_description = st.one_of(st.text(max_size=200), st.text(min_size=4990, max_size=5010))


@settings(max_examples=150, deadline=None)
@given(
    customer_id=st.one_of(st.uuids().map(str), st.uuids(), st.text(max_size=40), st.integers()),
    summary=_summary,
    description=_description,
)
def test_validate_draft_never_raises_and_reports_over_limit(
    customer_id: object, summary: str, description: str
) -> None:
    problems = validate_draft(
        TicketDraft(customer_id=customer_id, summary=summary, description=description)  # type: ignore[arg-type]
    )
    assert isinstance(problems, list)
    assert all(isinstance(p, str) for p in problems)
    fields = [p.split(":")[0] for p in problems]

    # An independent oracle for each rule.
    over_summary = len(summary) > MAX_SUMMARY_CHARS
    over_description = len(description) > MAX_DESCRIPTION_CHARS
    multi_line = len(f"x{summary}x".splitlines()) > 1
    assert any("at most 240" in p for p in problems) == over_summary
    assert any("at most 5000" in p for p in problems) == over_description
    assert any(p.startswith("summary: must be a single line") for p in problems) == multi_line
    assert any(p == "summary: must not be empty" for p in problems) == (not summary.strip())
    assert any(p == "description: must not be empty" for p in problems) == (not description.strip())
    assert any(p.startswith("summary: must not contain NUL") for p in problems) == (
        "\x00" in summary
    )
    assert ("customer_id" in fields) == (not _is_uuid(customer_id))


def _is_uuid(value: object) -> bool:
    if isinstance(value, uuid.UUID):
        return True
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value.strip())
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- filenames


class TestCleanFilename:
    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("report.pdf", "report.pdf"),
            ("/home/alice/secret/report.pdf", "report.pdf"),
            ("mixed/dir/sub/report.pdf", "report.pdf"),
            ("../../etc/passwd.png", "passwd.png"),
            ("re\x00po\rrt\n.pdf", "report.pdf"),
            ("tab\there\x1b[31m.pdf", "tabhere[31m.pdf"),
            ("del\x7f\x85.pdf", "del.pdf"),
            ("  padded.pdf  ", "padded.pdf"),
            ("résumé.pdf", "résumé.pdf"),
            ("снимок экрана.png", "снимок экрана.png"),
            ("表格.pdf", "表格.pdf"),
            ("dir/", ""),
        ],
    )
    def test_clean(self, raw: str, clean: str) -> None:
        assert clean_filename(raw) == clean

    @pytest.mark.skipif(os.sep != "/", reason="a backslash separates directories on Windows")
    def test_a_backslash_is_part_of_a_posix_file_name(self) -> None:
        assert clean_filename("a\\b.pdf") == "a\\b.pdf"
        assert clean_filename("/home/alice/a\\b.pdf") == "a\\b.pdf"

    @pytest.mark.parametrize(
        "given", ["C:\\Users\\alice\\report.pdf", "mixed/dir\\sub/report.pdf", "report.pdf"]
    )
    def test_a_given_name_is_cut_at_both_separators(self, given: str) -> None:
        # filename= may be a path from another system (a browser upload from Windows).
        assert Attachment.from_bytes(b"x", filename=given).filename == "report.pdf"
        assert Attachment.from_file(io.BytesIO(b"x"), filename=given).filename == "report.pdf"


# =========================================================================== requests


class TestCreateRequest:
    def test_fields(self) -> None:
        req = create_request(draft(customer_id=f" {CID.upper()} "))
        assert req.operation is Operation.CREATE
        assert req.method == "POST"
        assert req.path == "/api/v1/supportTickets/"
        assert req.needs_auth is True
        assert req.fields == (
            ("customerId", CID),
            ("summary", "Card top-up not credited"),
            ("description", "I topped up 100 USD yesterday and it never arrived."),
        )
        assert req.files == ()
        assert req.headers["Accept"] == "application/json"
        assert "Authorization" not in req.headers

    def test_uuid_object_sent_canonical(self) -> None:
        req = create_request(draft(customer_id=uuid.UUID(CID)))
        assert dict(req.fields)["customerId"] == CID

    def test_filenames_are_basenames(self, tmp_path: os.PathLike[str]) -> None:
        on_disk = sparse(os.path.join(tmp_path, "screen.png"), 7)
        files = [
            on_disk,
            Attachment.from_bytes(b"%PDF", filename="C:\\Users\\me\\scan.PDF"),
            Attachment.from_bytes(b"log", filename="/var/tmp/résumé.pdf"),
        ]
        req = create_request(draft(files=files))
        assert [a.filename for a in req.files] == ["screen.png", "scan.PDF", "résumé.pdf"]
        assert [a.content_type for a in req.files] == [
            "image/png",
            "application/pdf",
            "application/pdf",
        ]
        assert req.body_size == 7 + 4 + 3
        assert all(str(tmp_path) not in a.filename for a in req.files)

    def test_content_type_follows_cleaned_filename(self) -> None:
        att = Attachment.from_bytes(b"%PDF", filename="report.pdf ")
        req = create_request(draft(files=[att]))
        assert req.files[0].filename == "report.pdf"
        assert req.files[0].content_type == "application/pdf"


class TestGetRequest:
    def test_path_has_trailing_slash(self) -> None:
        req = get_request(TID)
        assert req.path == f"/api/v1/supportTickets/{TID}/"
        assert req.method == "GET"
        assert req.operation is Operation.GET
        assert req.needs_auth is True
        assert req.headers["Accept"] == "application/json"

    def test_canonical_id(self) -> None:
        assert get_request(f" {TID.upper()} ").path == f"/api/v1/supportTickets/{TID}/"
        assert get_request(uuid.UUID(TID)).path == f"/api/v1/supportTickets/{TID}/"

    @pytest.mark.parametrize("bad", ["", "nope", "../../oauth2/token", 42, None])
    def test_bad_ticket_id(self, bad: object) -> None:
        with pytest.raises(ValidationError) as info:
            get_request(bad)  # type: ignore[arg-type]
        assert info.value.problems[0].startswith("ticket_id:")

    def test_ticket_id_of(self) -> None:
        assert ticket_id_of(TID.upper()) == uuid.UUID(TID)


class TestTokenRequest:
    def test_basic_header_and_form(self) -> None:
        req = token_request("my-client", "s3cr:et")
        assert req.operation is Operation.TOKEN
        assert req.method == "POST"
        assert req.path == "/oauth2/token/"
        assert req.needs_auth is False
        scheme, _, encoded = req.headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        assert base64.b64decode(encoded) == b"my-client:s3cr:et"
        assert req.form == (("grant_type", "client_credentials"),)
        assert form_body(req) == b"grant_type=client_credentials"

    def test_non_ascii_credentials_utf8(self) -> None:
        req = token_request("clïent", "sécret")
        encoded = req.headers["Authorization"].removeprefix("Basic ")
        assert base64.b64decode(encoded).decode("utf-8") == "clïent:sécret"

    def test_repr_hides_credentials(self) -> None:
        req = token_request("my-client", "hunter2-secret")
        text = repr(req)
        assert "hunter2-secret" not in text
        assert req.headers["Authorization"].split()[1] not in text
        assert "Authorization" not in text


# =========================================================================== responses


def ticket_body(tid: str = TID, status: object = "PENDING", issue_key: object = None) -> dict:
    return {"ticketId": tid, "status": status, "issueKey": issue_key}


class TestParseTicket:
    def test_create_202(self) -> None:
        ticket = parse_ticket(CREATE, response(202, ticket_body()))
        assert ticket == Ticket(uuid.UUID(TID), TicketStatus.PENDING, None)
        assert ticket.status is TicketStatus.PENDING

    def test_get_200_created(self) -> None:
        req = get_request(TID)
        ticket = parse_ticket(
            req, response(200, ticket_body(status="CREATED", issue_key="SUP-1234"))
        )
        assert ticket.ticket_id == uuid.UUID(TID)
        assert ticket.status is TicketStatus.CREATED
        assert ticket.issue_key == "SUP-1234"
        assert ticket.is_final

    def test_get_uppercase_id_in_body_matches(self) -> None:
        ticket = parse_ticket(get_request(TID), response(200, ticket_body(tid=TID.upper())))
        assert ticket.ticket_id == uuid.UUID(TID)

    def test_missing_issue_key_is_none(self) -> None:
        ticket = parse_ticket(CREATE, response(202, {"ticketId": TID, "status": "FAILED"}))
        assert ticket.status is TicketStatus.FAILED
        assert ticket.issue_key is None

    def test_unknown_status_kept(self) -> None:
        ticket = parse_ticket(get_request(TID), response(200, ticket_body(status="ARCHIVED")))
        assert ticket.status == TicketStatus("ARCHIVED")
        assert ticket.status.value == "ARCHIVED"
        assert ticket.status.known is False
        assert ticket.is_final is False
        assert TicketStatus.CREATED.known is True

    def test_extra_keys_ignored(self) -> None:
        body = {**ticket_body(), "customerId": CID, "createdAt": "2024-01-01T00:00:00Z", "x": [1]}
        assert parse_ticket(CREATE, response(202, body)).ticket_id == uuid.UUID(TID)

    @pytest.mark.parametrize(
        "body",
        [
            {"status": "PENDING", "issueKey": None},
            {"ticketId": TID, "issueKey": None},
            ticket_body(tid="not-a-uuid"),
            ticket_body(tid=12345),
            ticket_body(tid=None),
            ticket_body(status=5),
            ticket_body(status=""),
            ticket_body(status=None),
            ticket_body(status=["PENDING"]),
            ticket_body(issue_key=1234),
            ticket_body(issue_key={"key": "SUP-1"}),
            [ticket_body()],
            "PENDING",
            b"",
            b"not json",
            b'{"ticketId": "' + TID.encode() + b'", "status": "PEN',
        ],
        ids=lambda b: repr(b)[:40],
    )
    def test_bad_bodies(self, body: object) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        with pytest.raises(UnexpectedResponseError) as info:
            parse_ticket(CREATE, response(202, raw))
        err = info.value
        assert err.status == 202
        assert err.method == "POST"
        assert err.path == "/api/v1/supportTickets/"
        assert err.body_excerpt is not None

    def test_truncated_body_rejected(self) -> None:
        with pytest.raises(UnexpectedResponseError, match=str(MAX_RESPONSE_BYTES)):
            parse_ticket(CREATE, response(202, ticket_body(), truncated=True))

    def test_get_answer_for_another_ticket(self) -> None:
        other = str(uuid.uuid4())
        with pytest.raises(UnexpectedResponseError) as info:
            parse_ticket(get_request(TID), response(200, ticket_body(tid=other)))
        assert other in str(info.value)
        assert TID in str(info.value)

    def test_error_status_raises_typed_error(self) -> None:
        body = {"code": 40400, "type": "NotFound", "detail": {"message": "no"}, "status": 404}
        with pytest.raises(TicketNotFoundError):
            parse_ticket(get_request(TID), response(404, body))


class TestParseToken:
    REQ = token_request("id", "secret")

    def test_camel_case(self) -> None:
        body = {
            "accessToken": "UfpqHJaQEjV27rR6itJyhUz5x6eOxz",
            "expiresIn": 36000,
            "tokenType": "Bearer",
            "scope": "read write",
        }
        info = parse_token(self.REQ, response(200, body))
        assert info == TokenInfo("UfpqHJaQEjV27rR6itJyhUz5x6eOxz", 36000, "Bearer", "read write")
        assert "UfpqHJaQEjV27rR6itJyhUz5x6eOxz" not in repr(info)

    def test_optional_fields(self) -> None:
        info = parse_token(self.REQ, response(200, {"accessToken": "abc", "expiresIn": 60}))
        assert info.token_type == "Bearer"
        assert info.scope is None

    @pytest.mark.parametrize(
        "body",
        [
            {"accessToken": "abc", "expiresIn": 0},
            {"accessToken": "abc", "expiresIn": -5},
            {"accessToken": "", "expiresIn": 60},
            {"accessToken": None, "expiresIn": 60},
            {"expiresIn": 60},
            {"accessToken": "abc"},
            {"accessToken": "abc", "expiresIn": "60"},
            {"accessToken": "abc", "expiresIn": True},
            {"accessToken": "abc", "expiresIn": 60.5},
            {"accessToken": 123, "expiresIn": 60},
            {"access_token": "abc", "expires_in": 60},
        ],
        ids=lambda b: json.dumps(b),
    )
    def test_bad_token_bodies(self, body: dict[str, object]) -> None:
        with pytest.raises(UnexpectedResponseError):
            parse_token(self.REQ, response(200, body))

    @pytest.mark.parametrize(
        ("status", "cls"),
        [
            (400, BadRequestError),
            (401, AuthenticationError),
            (403, AuthenticationError),
            (500, ServerError),
            (201, UnexpectedResponseError),
            (202, UnexpectedResponseError),
        ],
    )
    def test_non_200(self, status: int, cls: type[ApiError]) -> None:
        body = {"accessToken": "abc", "expiresIn": 60}
        with pytest.raises(cls) as info:
            parse_token(self.REQ, response(status, body))
        assert type(info.value) is cls
        assert info.value.path == "/oauth2/token/"

    @pytest.mark.parametrize(
        "body",
        [
            {"accessToken": "LEAKED-TOKEN-VALUE", "expiresIn": 0},
            {"access_token": "LEAKED-TOKEN-VALUE", "expires_in": 36000},
            {"accessToken": "LEAKED-TOKEN-VALUE", "expiresIn": "36000"},
        ],
        ids=["zero-lifetime", "snake-case", "string-lifetime"],
    )
    def test_rejected_token_body_does_not_leak_token(self, body: dict[str, object]) -> None:
        with pytest.raises(UnexpectedResponseError) as info:
            parse_token(self.REQ, response(200, body))
        err = info.value
        assert "LEAKED-TOKEN-VALUE" not in str(err)
        assert "LEAKED-TOKEN-VALUE" not in repr(err)
        assert "LEAKED-TOKEN-VALUE" not in (err.body_excerpt or "")


# --------------------------------------------------------------------------- error_for


def err_body(code: object, type_: object = "X", message: str = "msg", status: int = 0) -> dict:
    return {"code": code, "type": type_, "detail": {"message": message}, "status": status}


class TestErrorFor:
    @pytest.mark.parametrize(
        ("status", "body", "cls"),
        [
            (400, err_body(20000, "ValidationError"), BadRequestError),
            (400, b"", BadRequestError),
            (401, err_body(40002, "AuthenticationFailed"), AuthenticationError),
            (401, b"", AuthenticationError),
            (
                403,
                err_body(20061, "SupportTicketsNotEnabledException"),
                SupportTicketsNotEnabledError,
            ),
            (403, err_body(40001, "NotAuthenticated"), AuthenticationError),
            (403, b"", AuthenticationError),
            (403, err_body("20061"), AuthenticationError),
            (404, err_body(40400, "NotFound"), TicketNotFoundError),
            (404, b"<html>Not Found</html>", TicketNotFoundError),
            (429, b"", RateLimitedError),
            (500, b"", ServerError),
            (502, b"", ServerError),
            (503, b"", ServerError),
            (504, b"", ServerError),
            (520, b"", ServerError),
            (529, b"", ServerError),
            (599, b"", ServerError),
            (408, b"", ApiError),
            (413, b"", BadRequestError),
            (422, err_body(20000), BadRequestError),
            (204, b"", UnexpectedResponseError),
            (302, b"", UnexpectedResponseError),
            (101, b"", UnexpectedResponseError),
        ],
    )
    def test_class_by_status(self, status: int, body: object, cls: type[ApiError]) -> None:
        err = error_for(CREATE, response(status, body))  # type: ignore[arg-type]
        assert type(err) is cls
        assert int(err.status) == status
        assert err.method == "POST"
        assert err.path == "/api/v1/supportTickets/"
        assert f"HTTP {status}" in str(err) or cls is SupportTicketsNotEnabledError

    def test_status_is_http_status_when_standard(self) -> None:
        assert error_for(CREATE, response(404)).status is http.HTTPStatus.NOT_FOUND
        nonstandard = error_for(CREATE, response(529)).status
        assert nonstandard == 529
        assert not isinstance(nonstandard, http.HTTPStatus)

    def test_documented_body_parsed(self) -> None:
        body = err_body(
            20039, "TermsAndConditionsNotAcceptedException", "Customer has not accepted"
        )
        err = error_for(CREATE, response(400, body, {"X-Request-Id": "req-1"}))
        assert err.code == 20039
        assert err.type == "TermsAndConditionsNotAcceptedException"
        assert err.detail == {"message": "Customer has not accepted"}
        assert err.server_message == "Customer has not accepted"
        assert err.body_excerpt is None
        assert err.headers["x-request-id"] == "req-1"
        assert "20039" in str(err)
        assert "Customer has not accepted" in str(err)

    def test_detail_with_extra_keys(self) -> None:
        body = {"code": 40001, "type": "NotAuthenticated", "status": 403,
                "detail": {"message": "no creds", "code": "not_authenticated"}}  # fmt: skip
        err = error_for(CREATE, response(403, body))
        assert type(err) is AuthenticationError
        assert err.code == 40001
        assert err.detail["code"] == "not_authenticated"

    def test_support_tickets_not_enabled_message(self) -> None:
        err = error_for(get_request(TID), response(403, err_body(20061, message="nope")))
        assert isinstance(err, SupportTicketsNotEnabledError)
        assert err.code == 20061
        text = str(err)
        assert "20061" in text
        assert "Ripio" in text
        assert "enable" in text

    def test_retry_after_seconds(self) -> None:
        err = error_for(CREATE, response(429, b"", {"Retry-After": "7"}))
        assert isinstance(err, RateLimitedError)
        assert err.retry_after == 7.0

    def test_retry_after_header_name_case_insensitive(self) -> None:
        err = error_for(CREATE, response(429, b"", {"retry-after": "3"}))
        assert isinstance(err, RateLimitedError)
        assert err.retry_after == 3.0

    def test_retry_after_http_date(self) -> None:
        date = email.utils.formatdate(time.time() + 120, usegmt=True)
        err = error_for(CREATE, response(429, b"", {"Retry-After": date}))
        assert isinstance(err, RateLimitedError)
        assert err.retry_after is not None
        assert 100 <= err.retry_after <= 121

    def test_rate_limited_without_retry_after(self) -> None:
        err = error_for(CREATE, response(429))
        assert isinstance(err, RateLimitedError)
        assert err.retry_after is None

    def test_server_error_retry_after(self) -> None:
        err = error_for(CREATE, response(503, b"", {"Retry-After": "2"}))
        assert isinstance(err, ServerError)
        assert err.retry_after == 2.0

    def test_html_502_excerpt(self) -> None:
        body = (
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            b"</body>\r\n</html>\r\n" + b" " * 500
        )
        err = error_for(get_request(TID), response(502, body))
        assert isinstance(err, ServerError)
        assert err.code is None
        assert err.body_excerpt is not None
        assert "502 Bad Gateway" in err.body_excerpt
        assert "\n" not in err.body_excerpt  # whitespace collapsed to one line
        assert err.body_excerpt.endswith("…")
        assert "502 Bad Gateway" in str(err)

    def test_long_body_excerpt_is_bounded(self) -> None:
        err = error_for(CREATE, response(500, b"A" * 100_000))
        assert err.body_excerpt is not None
        assert len(err.body_excerpt) <= 201

    def test_truncated_json(self) -> None:
        err = error_for(CREATE, response(403, b'{"code": 20061, "type": "SupportTick'))
        assert type(err) is AuthenticationError  # cannot tell it is 20061
        assert err.code is None
        assert err.body_excerpt == '{"code": 20061, "type": "SupportTick'

    def test_empty_body(self) -> None:
        err = error_for(CREATE, response(500, b""))
        assert isinstance(err, ServerError)
        assert err.code is None
        assert err.type is None
        assert err.detail == {}
        assert err.body_excerpt == ""
        assert err.server_message is None

    def test_detail_as_string(self) -> None:
        body = {"code": 20000, "type": "ValidationError", "detail": "summary too long"}
        err = error_for(CREATE, response(400, body))
        assert err.detail == {"message": "summary too long"}
        assert err.server_message == "summary too long"

    @pytest.mark.parametrize("detail", [None, 5, ["a"], True])
    def test_detail_of_other_types_dropped(self, detail: object) -> None:
        err = error_for(CREATE, response(400, {"code": 1, "detail": detail}))
        assert err.detail == {}

    def test_code_as_bool_is_not_int(self) -> None:
        err = error_for(CREATE, response(403, {"code": True, "type": "X", "detail": {}}))
        assert err.code is None
        assert type(err) is AuthenticationError

    @pytest.mark.parametrize("code", ["20061", 20061.0, None, [20061]])
    def test_code_of_other_types_dropped(self, code: object) -> None:
        err = error_for(CREATE, response(400, {"code": code, "type": 5}))
        assert err.code is None
        assert err.type is None

    def test_json_not_an_object(self) -> None:
        err = error_for(CREATE, response(400, [1, 2, 3]))
        assert err.code is None
        assert err.body_excerpt == "[1, 2, 3]"

    def test_deeply_nested_json_does_not_crash(self) -> None:
        err = error_for(CREATE, response(400, b"[" * 100_000))
        assert isinstance(err, BadRequestError)

    def test_token_error_body_not_copied(self) -> None:
        # A token endpoint's answer may hold a token: no excerpt of it in the error.
        err = error_for(token_request("id", "s"), response(401, b"accessToken=LEAKED-TOKEN"))
        assert err.body_excerpt is None
        assert "LEAKED-TOKEN" not in str(err)

    def test_message_has_no_request_headers(self) -> None:
        req = token_request("id", "topsecret")
        err = error_for(req, response(401, b""))
        assert "topsecret" not in str(err)
        assert req.headers["Authorization"] not in str(err)


_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_error_json = st.fixed_dictionaries(
    {}, optional={"code": _json, "type": _json, "detail": _json, "status": _json}
).map(lambda d: json.dumps(d).encode())


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(st.binary(max_size=300), _error_json),
    retry_after=st.one_of(st.none(), st.text(max_size=40)),
)
def test_error_for_never_raises(status: int, body: bytes, retry_after: str | None) -> None:
    hdrs = {} if retry_after is None else {"Retry-After": retry_after}
    err = error_for(CREATE, response(status, body, hdrs))
    assert isinstance(err, ApiError)
    assert int(err.status) == status
    assert isinstance(str(err), str)
    if err.code is not None:
        assert type(err.code) is int
    if status == 429:
        assert isinstance(err, RateLimitedError)
    elif status >= 500:
        assert isinstance(err, ServerError)
    elif status == 404:
        assert isinstance(err, TicketNotFoundError)
    elif status in (401, 403):
        assert isinstance(err, (AuthenticationError, SupportTicketsNotEnabledError))
    elif status < 400:
        assert isinstance(err, UnexpectedResponseError)
    if isinstance(err, (RateLimitedError, ServerError)) and err.retry_after is not None:
        assert err.retry_after >= 0


# --------------------------------------------------------------------------- Retry-After


class TestParseRetryAfter:
    NOW = 1_700_000_000.0

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("0", 0.0),
            ("7", 7.0),
            (" 30 ", 30.0),
            ("1.5", 1.5),
            ("-5", 0.0),
            ("-0.1", 0.0),
            (None, None),
            ("", None),
            ("soon", None),
            ("Mon, 99 Foo", None),
            ("inf", None),
            ("-inf", None),
            ("Infinity", None),
            ("nan", None),
            ("1e400", None),
        ],
    )
    def test_values(self, value: str | None, expected: float | None) -> None:
        assert parse_retry_after(value, now=self.NOW) == expected

    def test_http_date_in_future(self) -> None:
        date = email.utils.formatdate(self.NOW + 90, usegmt=True)
        assert parse_retry_after(date, now=self.NOW) == pytest.approx(90.0)

    def test_http_date_in_past_is_zero(self) -> None:
        date = email.utils.formatdate(self.NOW - 90, usegmt=True)
        assert parse_retry_after(date, now=self.NOW) == 0.0

    def test_http_date_with_offset(self) -> None:
        # RFC 7231 wants GMT, but a numeric offset is still a definite instant.
        assert parse_retry_after("Tue, 14 Nov 2023 23:13:20 +0100", now=self.NOW) == 0.0
        assert parse_retry_after("Tue, 14 Nov 2023 23:14:20 +0100", now=self.NOW) == 60.0
        assert parse_retry_after("Tue, 14 Nov 2023 17:14:20 -0500", now=self.NOW) == 60.0

    def test_date_without_zone_is_unreadable(self) -> None:
        assert parse_retry_after("Wed, 15 Nov 2023 00:14:20", now=self.NOW) is None

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=60))
    def test_never_raises(self, value: str) -> None:
        result = parse_retry_after(value, now=self.NOW)
        assert result is None or (result >= 0 and result != float("inf"))


# =========================================================================== retry rules


def _server(status: int, retry_after: float | None = None) -> ServerError:
    return ServerError(status, retry_after=retry_after)


def _transport(sent: bool) -> TransportError:
    return TransportError("x", method="POST", path="/", request_sent=sent)


class TestRetryPredicates:
    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (_transport(False), True),
            (_transport(True), False),
            (RequestTimeoutError("t", method="POST", path="/", request_sent=True), False),
            (RequestTimeoutError("t", method="POST", path="/", request_sent=False), True),
            (RateLimitedError(429), True),
            (RateLimitedError(429, retry_after=3.0), True),
            (_server(503, 2.0), True),
            (_server(503, 0.0), True),
            (_server(503), False),
            (_server(500), False),
            (_server(500, 2.0), False),
            (_server(502), False),
            (_server(504), False),
            (_server(504, 1.0), False),
            (BadRequestError(400), False),
            (AuthenticationError(401), False),
            (ApiError(408), False),
            (ValidationError(["x"]), False),
            (OSError("boom"), False),
        ],
        ids=repr,
    )
    def test_create_may_be_resent(self, error: BaseException, expected: bool) -> None:
        assert create_may_be_resent(error) is expected

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            (_transport(False), True),
            (_transport(True), True),
            (RequestTimeoutError("t", method="GET", path="/", request_sent=True), True),
            (RateLimitedError(429), True),
            (_server(500), True),
            (_server(502), True),
            (_server(503), True),
            (_server(504), True),
            (ApiError(408), True),
            (BadRequestError(400), False),
            (AuthenticationError(401), False),
            (SupportTicketsNotEnabledError(403, code=20061), False),
            (TicketNotFoundError(404), False),
            (UnexpectedResponseError(200), False),
            (ValidationError(["x"]), False),
            (RuntimeError("closed"), False),
        ],
        ids=repr,
    )
    def test_read_may_be_resent(self, error: BaseException, expected: bool) -> None:
        assert read_may_be_resent(error) is expected

    def test_is_auth_failure(self) -> None:
        assert is_auth_failure(AuthenticationError(401))
        assert not is_auth_failure(SupportTicketsNotEnabledError(403, code=20061))
        assert not is_auth_failure(BadRequestError(400))

    def test_server_delay(self) -> None:
        assert server_delay(RateLimitedError(429, retry_after=4.0)) == 4.0
        assert server_delay(_server(503, 1.5)) == 1.5
        assert server_delay(_server(500)) is None
        assert server_delay(_transport(False)) is None

    def test_request_body_size(self) -> None:
        files = [Attachment.from_bytes(b"abc", filename=name) for name in ("a.png", "b.png")]
        req = create_request(draft(files=files))
        assert req.body_size == 6
        assert get_request(TID).body_size == 0

    def test_protocol_module_is_pure(self) -> None:
        assert "aiohttp" not in vars(_protocol)
