"""Value classes (``models``) and the cattrs converter (``_convert``)."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import uuid

import attrs
import cattrs
import pytest

from skala_async import _convert
from skala_async._protocol import TokenInfo
from skala_async.models import Attachment, Ticket, TicketDraft, TicketStatus

CID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
TID = uuid.UUID("0b6f1c2e-7d39-4f5e-9a43-52c1f0e9d8a7")
CONTENT = bytes(range(256)) * 41 + b"tail"  # 10500 bytes, not a multiple of any chunk size


@pytest.fixture
def pdf(tmp_path: pathlib.Path) -> pathlib.Path:
    p = tmp_path / "receipt.pdf"
    p.write_bytes(CONTENT)
    return p


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# =========================================================================== Attachment


class TestFromPath:
    def test_size_name_and_type(self, pdf: pathlib.Path) -> None:
        att = Attachment.from_path(pdf)
        assert att.filename == "receipt.pdf"
        assert att.size == len(CONTENT)
        assert att.content_type == "application/pdf"
        assert att.problem is None
        assert att.path == pdf

    def test_str_path(self, pdf: pathlib.Path) -> None:
        assert Attachment.from_path(str(pdf)).size == len(CONTENT)

    def test_filename_override(self, pdf: pathlib.Path) -> None:
        att = Attachment.from_path(pdf, filename="renamed.png")
        assert att.filename == "renamed.png"
        assert att.content_type == "image/png"
        assert att.size == len(CONTENT)

    @pytest.mark.parametrize(
        ("name", "ctype"),
        [
            ("a.jpg", "image/jpeg"),
            ("a.JPEG", "image/jpeg"),
            ("a.png", "image/png"),
            ("a.webp", "image/webp"),
            ("a.mp4", "video/mp4"),
            ("a.MOV", "video/quicktime"),
            ("a.avi", "video/x-msvideo"),
            ("a.webm", "video/webm"),
            ("a.Pdf", "application/pdf"),
            ("a.exe", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ],
    )
    def test_content_type_by_extension(self, tmp_path: pathlib.Path, name: str, ctype: str) -> None:
        p = tmp_path / name
        p.write_bytes(b"x")
        assert Attachment.from_path(p).content_type == ctype

    def test_missing_is_a_problem_not_an_exception(self, tmp_path: pathlib.Path) -> None:
        att = Attachment.from_path(tmp_path / "gone.pdf")
        assert att.size is None
        assert att.problem == "'gone.pdf' does not exist"

    def test_directory_is_a_problem(self, tmp_path: pathlib.Path) -> None:
        att = Attachment.from_path(tmp_path)
        assert att.size is None
        assert att.problem is not None
        assert "not a regular file" in att.problem

    def test_sha256_and_chunks(self, pdf: pathlib.Path) -> None:
        att = Attachment.from_path(pdf)
        assert att.sha256() == sha(CONTENT)
        chunks = list(att.iter_chunks(1000))
        assert b"".join(chunks) == CONTENT
        assert len(chunks) == 11
        assert all(len(c) <= 1000 for c in chunks)

    def test_a_file_that_grew_since_it_was_made_is_an_os_error(self, pdf: pathlib.Path) -> None:
        """Exactly the size seen when made, or an error: never a silent prefix."""
        att = Attachment.from_path(pdf)
        with pdf.open("ab") as f:
            f.write(b"appended later")
        with pytest.raises(OSError, match="became longer"):
            b"".join(att.iter_chunks())

    def test_an_empty_file_that_grew_is_an_os_error(self, tmp_path: pathlib.Path) -> None:
        empty = tmp_path / "empty.pdf"
        empty.write_bytes(b"")
        att = Attachment.from_path(empty)
        assert list(att.iter_chunks()) == []
        empty.write_bytes(b"late")
        with pytest.raises(OSError, match="became longer"):
            list(att.iter_chunks())

    def test_an_attachment_of_unknown_size_is_read_to_its_end(self, pdf: pathlib.Path) -> None:
        att = Attachment("x.pdf", "application/pdf", None, path=pdf)
        assert b"".join(att.iter_chunks(7)) == CONTENT

    def test_reading_past_the_end_stays_at_the_end(self, pdf: pathlib.Path) -> None:
        chunks = Attachment.from_path(pdf).iter_chunks(len(CONTENT))
        assert next(chunks) == CONTENT
        assert chunks.done
        assert next(chunks, None) is None  # the file is not opened again

    def test_a_file_that_shrank_since_it_was_made_is_an_os_error(self, pdf: pathlib.Path) -> None:
        att = Attachment.from_path(pdf)
        pdf.write_bytes(CONTENT[:10])
        with pytest.raises(OSError, match=r"became shorter .*\(10 of"):
            b"".join(att.iter_chunks(4))

    def test_chunks_can_be_read_twice(self, pdf: pathlib.Path) -> None:
        att = Attachment.from_path(pdf)
        assert b"".join(att.iter_chunks(4096)) == b"".join(att.iter_chunks(333)) == CONTENT

    def test_partial_iteration_can_be_closed(self, pdf: pathlib.Path) -> None:
        it = Attachment.from_path(pdf).iter_chunks(100)
        assert next(it) == CONTENT[:100]
        it.close()  # closes the file it opened (else -W error trips on a ResourceWarning)


class TestFromBytes:
    def test_basic(self) -> None:
        att = Attachment.from_bytes(b"\x89PNG data", filename="shot.png")
        assert att.size == 9
        assert att.content_type == "image/png"
        assert att.filename == "shot.png"
        assert att.problem is None
        assert att.sha256() == sha(b"\x89PNG data")
        assert b"".join(att.iter_chunks(2)) == b"\x89PNG data"

    @pytest.mark.parametrize("data", [bytearray(b"abc"), memoryview(b"abc")])
    def test_bytes_like(self, data: bytes) -> None:
        att = Attachment.from_bytes(data, filename="a.pdf")
        assert att.data == b"abc"
        assert type(att.data) is bytes

    def test_copy_of_mutable_input(self) -> None:
        buf = bytearray(b"abc")
        att = Attachment.from_bytes(buf, filename="a.pdf")
        buf[0] = ord("z")
        assert att.data == b"abc"

    @pytest.mark.parametrize("data", ["text", 123, None])
    def test_not_bytes(self, data: object) -> None:
        with pytest.raises(TypeError):
            Attachment.from_bytes(data, filename="a.pdf")  # type: ignore[arg-type]

    def test_empty(self) -> None:
        att = Attachment.from_bytes(b"", filename="empty.pdf")
        assert att.size == 0
        assert list(att.iter_chunks()) == []
        assert att.sha256() == sha(b"")


class TestFromFile:
    def test_position_kept_and_content_from_there(self, pdf: pathlib.Path) -> None:
        with pdf.open("rb") as f:
            f.seek(100)
            att = Attachment.from_file(f)
            assert f.tell() == 100  # from_file does not move the caller's position
            assert att.offset == 100
            assert att.size == len(CONTENT) - 100
            assert att.filename == "receipt.pdf"
            assert att.content_type == "application/pdf"
            assert att.problem is None
            assert att.sha256() == sha(CONTENT[100:])
            assert b"".join(att.iter_chunks(777)) == CONTENT[100:]
            # Read again: starts from the remembered offset each time.
            f.seek(0)
            assert att.sha256() == sha(CONTENT[100:])
            assert not f.closed  # the caller's file stays open
        assert f.closed

    def test_bytes_io(self) -> None:
        buf = io.BytesIO(b"0123456789")
        buf.seek(4)
        att = Attachment.from_file(buf, filename="x.webm")
        assert att.size == 6
        assert b"".join(att.iter_chunks(4)) == b"456789"
        assert att.content_type == "video/webm"
        assert not buf.closed

    def test_no_name_and_no_filename(self) -> None:
        att = Attachment.from_file(io.BytesIO(b"abc"))
        assert att.filename == ""
        assert att.content_type == "application/octet-stream"

    def test_text_file_rejected(self, tmp_path: pathlib.Path) -> None:
        p = tmp_path / "notes.pdf"
        p.write_text("hello")
        with p.open("r") as f, pytest.raises(TypeError, match="binary"):
            Attachment.from_file(f)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="binary"):
            Attachment.from_file(io.StringIO("hello"))  # type: ignore[arg-type]

    def test_closed_file_is_a_problem(self) -> None:
        buf = io.BytesIO(b"abc")
        buf.close()
        att = Attachment.from_file(buf, filename="x.pdf")
        assert att.size is None
        assert att.problem is not None

    def test_sha256_equals_hashlib_for_large_content(self, tmp_path: pathlib.Path) -> None:
        data = os.urandom(600_000)  # more than two default 256 KiB chunks
        p = tmp_path / "clip.mp4"
        p.write_bytes(data)
        with p.open("rb") as f:
            att = Attachment.from_file(f)
            assert att.sha256() == sha(data)
            assert [len(c) for c in att.iter_chunks()] == [262144, 262144, 75712]
            assert not f.closed


class TestCoerce:
    def test_kinds(self, pdf: pathlib.Path) -> None:
        existing = Attachment.from_bytes(b"x", filename="a.png")
        assert Attachment.coerce(existing) is existing
        assert Attachment.coerce(str(pdf)).path == pdf
        assert Attachment.coerce(pdf).size == len(CONTENT)
        with pdf.open("rb") as f:
            att = Attachment.coerce(f)
            assert att.fileobj is f
            assert att.size == len(CONTENT)

    @pytest.mark.parametrize("value", [b"raw bytes", bytearray(b"x"), 42, 1.5, None, object()])
    def test_rejects(self, value: object) -> None:
        with pytest.raises(TypeError):
            Attachment.coerce(value)  # type: ignore[arg-type]


class TestRepr:
    def test_no_content_in_reprs(self, pdf: pathlib.Path) -> None:
        secret = b"PRIVATE-CUSTOMER-DATA-12345"
        for att in (
            Attachment.from_bytes(secret, filename="a.pdf"),
            Attachment.from_file(io.BytesIO(secret), filename="b.pdf"),
        ):
            text = repr(att)
            assert "PRIVATE-CUSTOMER-DATA" not in text
            assert "a.pdf" in text or "b.pdf" in text
            assert str(len(secret)) in text
        draft = TicketDraft(CID, "s", "d", files=[Attachment.from_bytes(secret, filename="c.pdf")])
        assert "PRIVATE-CUSTOMER-DATA" not in repr(draft)
        assert "c.pdf" in repr(draft)

    def test_path_repr_has_no_directory(self, pdf: pathlib.Path) -> None:
        text = repr(Attachment.from_path(pdf))
        assert "receipt.pdf" in text
        assert str(pdf.parent) not in text
        assert CONTENT[:20].hex() not in text


# =========================================================================== TicketDraft


class TestTicketDraft:
    def test_mixed_files_coerced(self, tmp_path: pathlib.Path, pdf: pathlib.Path) -> None:
        png = tmp_path / "screen.png"
        png.write_bytes(b"png")
        mem = Attachment.from_bytes(b"log", filename="log.png")
        draft = TicketDraft(CID, "s", "d", files=[str(pdf), png, mem])
        assert isinstance(draft.files, tuple)
        assert all(isinstance(a, Attachment) for a in draft.files)
        assert [a.filename for a in draft.files] == ["receipt.pdf", "screen.png", "log.png"]
        assert draft.files[2] is mem
        assert [a.size for a in draft.files] == [len(CONTENT), 3, 3]

    def test_single_str_path_is_one_file(self, pdf: pathlib.Path) -> None:
        draft = TicketDraft(CID, "s", "d", files=str(pdf))  # type: ignore[arg-type]
        assert len(draft.files) == 1
        assert draft.files[0].filename == "receipt.pdf"

    def test_single_path_and_single_attachment(self, pdf: pathlib.Path) -> None:
        assert len(TicketDraft(CID, "s", "d", files=pdf).files) == 1  # type: ignore[arg-type]
        mem = Attachment.from_bytes(b"x", filename="x.pdf")
        assert TicketDraft(CID, "s", "d", files=mem).files == (mem,)  # type: ignore[arg-type]

    def test_generator_and_default(self, pdf: pathlib.Path) -> None:
        assert TicketDraft(CID, "s", "d").files == ()
        assert len(TicketDraft(CID, "s", "d", files=(p for p in [pdf, pdf])).files) == 2

    def test_bytes_are_not_files(self) -> None:
        with pytest.raises(TypeError):
            TicketDraft(CID, "s", "d", files=b"%PDF")  # type: ignore[arg-type]

    def test_single_file_object_is_one_file(self, pdf: pathlib.Path) -> None:
        with pdf.open("rb") as f:
            draft = TicketDraft(CID, "s", "d", files=f)  # type: ignore[arg-type]
            assert len(draft.files) == 1
            assert draft.files[0].fileobj is f

    def test_frozen(self) -> None:
        draft = TicketDraft(CID, "s", "d")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            draft.summary = "other"  # type: ignore[misc]


# =========================================================================== Ticket / status


class TestTicket:
    def test_frozen_and_hashable(self) -> None:
        t = Ticket(TID, TicketStatus.PENDING)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            t.status = TicketStatus.CREATED  # type: ignore[misc]
        assert t == Ticket(TID, TicketStatus.PENDING, None)
        assert len({t, Ticket(TID, TicketStatus.PENDING)}) == 1
        assert t.issue_key is None
        assert not t.is_final

    @pytest.mark.parametrize(
        ("status", "final"),
        [(TicketStatus.PENDING, False), (TicketStatus.CREATED, True), (TicketStatus.FAILED, True)],
    )
    def test_is_final(self, status: TicketStatus, final: bool) -> None:
        assert Ticket(TID, status).is_final is final

    def test_repr_html_escapes(self) -> None:
        evil = "<script>alert('x')</script>&"
        html_text = Ticket(TID, TicketStatus("<b>NEW</b>"), evil)._repr_html_()
        assert "<script>" not in html_text
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in html_text
        assert "<b>" not in html_text
        assert "&lt;b&gt;NEW&lt;/b&gt;" in html_text
        assert str(TID) in html_text
        assert html_text.startswith("<table")

    def test_repr_html_without_issue_key(self) -> None:
        html_text = Ticket(TID, TicketStatus.PENDING)._repr_html_()
        assert "PENDING" in html_text
        assert "—" in html_text
        assert "None" not in html_text


class TestTicketStatus:
    def test_unknown_kept(self) -> None:
        s = TicketStatus("ARCHIVED")
        assert s.value == "ARCHIVED"
        assert s == "ARCHIVED"
        assert str(s) == "ARCHIVED"
        assert s.known is False
        assert s.is_final is False
        assert isinstance(s, TicketStatus)

    def test_known(self) -> None:
        assert TicketStatus("CREATED") is TicketStatus.CREATED
        assert all(s.known for s in TicketStatus)
        assert str(TicketStatus.FAILED) == "FAILED"
        assert [s.value for s in TicketStatus] == ["PENDING", "CREATED", "FAILED"]

    @pytest.mark.parametrize("bad", ["", None, 3])
    def test_not_a_status(self, bad: object) -> None:
        with pytest.raises(ValueError, match="is not a valid TicketStatus"):
            TicketStatus(bad)


# =========================================================================== _convert


class TestConvert:
    @pytest.mark.parametrize(
        ("snake", "camel"),
        [
            ("ticket_id", "ticketId"),
            ("issue_key", "issueKey"),
            ("access_token", "accessToken"),
            ("expires_in", "expiresIn"),
            ("status", "status"),
        ],
    )
    def test_to_camel(self, snake: str, camel: str) -> None:
        assert _convert.to_camel(snake) == camel

    def test_ticket_round_trip(self) -> None:
        t = Ticket(TID, TicketStatus.CREATED, "SUP-1234")
        data = _convert.unstructure(t)
        assert data == {"ticketId": str(TID), "status": "CREATED", "issueKey": "SUP-1234"}
        assert _convert.structure(data, Ticket) == t

    def test_unknown_status_round_trip(self) -> None:
        t = Ticket(TID, TicketStatus("ARCHIVED"))
        back = _convert.structure(_convert.unstructure(t), Ticket)
        assert back == t
        assert back.status.value == "ARCHIVED"

    def test_token_round_trip(self) -> None:
        info = TokenInfo("tok", 36000, "Bearer", "read write")
        data = _convert.unstructure(info)
        assert data == {
            "accessToken": "tok",
            "expiresIn": 36000,
            "tokenType": "Bearer",
            "scope": "read write",
        }
        assert _convert.structure(data, TokenInfo) == info

    def test_snake_case_keys_not_accepted(self) -> None:
        with pytest.raises(cattrs.BaseValidationError):
            _convert.structure({"ticket_id": str(TID), "status": "PENDING"}, Ticket)

    @pytest.mark.parametrize(
        "data",
        [
            {"ticketId": str(TID), "status": True},
            {"ticketId": 1, "status": "PENDING"},
            {"ticketId": str(TID), "status": "PENDING", "issueKey": 5},
        ],
    )
    def test_wrong_types_raise(self, data: dict[str, object]) -> None:
        with pytest.raises(cattrs.BaseValidationError):
            _convert.structure(data, Ticket)

    def test_bool_is_not_an_int(self) -> None:
        with pytest.raises(cattrs.BaseValidationError):
            _convert.structure({"accessToken": "t", "expiresIn": True}, TokenInfo)

    def test_fresh_converter_behaves_the_same(self) -> None:
        conv = _convert.make_converter()
        assert conv is not _convert.converter
        data = {"ticketId": str(TID).upper(), "status": "PENDING", "extra": 1}
        assert conv.structure(data, Ticket) == Ticket(TID, TicketStatus.PENDING)
