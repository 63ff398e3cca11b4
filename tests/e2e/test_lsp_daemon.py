# SPDX-License-Identifier: Apache-2.0
"""End to end: the real ``lspilot lsp`` process, a real daemon process, a real (tiny) model.

The tiny model has random weights and a real Qwen2.5-Coder tokenizer: its text is noise, but it
is the model's, so each test checks the suggestion against the daemon's own answer for the same
prefix and suffix rather than against fixed words.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from lspilot.protocol.messages import StopPolicy
from tests.e2e.lsp_session import (
    Partials,
    direct_completion,
    field,
    inline_params,
    open_document,
    status,
    type_text,
)

URI = "file:///work/example.py"
TEXT = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return \n"
MAX_NEW = 24
# At the top level of a file with nothing after the cursor, a multi-line completion has no block
# to leave and no suffix to meet: the tiny model generates until max_new_tokens, long enough to
# be cancelled mid-stream.
LONG_URI = "file:///work/long.py"
LONG_TEXT = "import os\n\n"


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "lspilot", "lsp"]),
)
async def client(lsp_client: LanguageClient, daemon):
    lsp_client.partials = Partials(lsp_client)
    lsp_client.init_result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={
                "daemonAddress": daemon.address,
                "autostartDaemon": False,
                "debounceMs": 0,
                "maxNewTokens": MAX_NEW,
                "choicesOnInvoke": 1,
                "stop": "single_line",
                # These tests check the plumbing against the daemon's raw text; post-processing
                # has its own test below and golden tables in tests/unit.
                "postprocess": False,
                "cache": False,
                "tokenHealing": False,
            },
        )
    )
    yield
    await lsp_client.shutdown_session()


def _configure(client, **settings) -> None:
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"lspilot": settings})
    )


async def test_server_advertises_inline_completion(client: LanguageClient):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.position_encoding == types.PositionEncodingKind.Utf16
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental


async def test_inline_completion_comes_from_the_model(client: LanguageClient, daemon):
    open_document(client, URI, TEXT)
    result = await client.text_document_inline_completion_async(inline_params(URI, 5, 11))
    assert isinstance(result, types.InlineCompletionList)
    assert len(result.items) == 1
    item = result.items[0]
    expected = await direct_completion(
        daemon.address,
        "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return ",
        "\n",
        max_new_tokens=MAX_NEW,
        stop=StopPolicy.SINGLE_LINE,
    )
    assert expected.strip(), "the tiny model produced nothing to compare with"
    assert item.insert_text == expected
    assert item.range == types.Range(
        start=types.Position(line=5, character=11), end=types.Position(line=5, character=11)
    )
    final = await client.partials.wait(lambda p: field(p, "done"))
    assert field(final, "text") == expected
    assert field(final, "finishReason") in ("stop", "length")


async def test_typing_is_synced_incrementally(client: LanguageClient, daemon):
    open_document(client, URI, TEXT)
    type_text(client, URI, 2, 5, 11, "a")
    type_text(client, URI, 3, 5, 12, " *")
    result = await client.text_document_inline_completion_async(inline_params(URI, 5, 14))
    expected = await direct_completion(
        daemon.address,
        "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a *",
        "\n",
        max_new_tokens=MAX_NEW,
        stop=StopPolicy.SINGLE_LINE,
    )
    assert [i.insert_text for i in result.items] == ([expected] if expected.strip() else [])


async def test_partial_suggestions_grow_to_the_final_answer(client: LanguageClient):
    _configure(client, maxNewTokens=64, stop="multi_line")
    open_document(client, URI, TEXT)
    result = await client.text_document_inline_completion_async(inline_params(URI, 5, 11))
    final_text = result.items[0].insert_text
    growing = [field(p, "text") for p in client.partials.items if not field(p, "done")]
    assert len(growing) >= 2, "expected progressive notifications before the answer"
    for earlier, later in zip(growing, growing[1:], strict=False):
        assert later.startswith(earlier)  # grows, never retracts
    (final,) = [p for p in client.partials.items if field(p, "done")]
    assert field(final, "text") == final_text == growing[-1]


async def test_superseded_request_is_cancelled_in_the_daemon(client: LanguageClient, daemon):
    _configure(client, maxNewTokens=1500, stop="multi_line")
    open_document(client, LONG_URI, LONG_TEXT)
    before = await status(daemon.address)
    first = asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(LONG_URI, 2, 0))
    )
    await client.partials.wait(lambda p: not field(p, "done"))  # the model is generating
    _configure(client, maxNewTokens=8, stop="single_line")
    # The cursor moved (to the end of line 0): the in-flight suggestion no longer applies.
    second = await client.text_document_inline_completion_async(inline_params(LONG_URI, 0, 9))
    with pytest.raises(JsonRpcException) as err:
        await first
    assert err.value.code == types.LSPErrorCodes.RequestCancelled
    assert isinstance(second, types.InlineCompletionList)
    after = await status(daemon.address)
    assert after["cancelled_total"] == before["cancelled_total"] + 1
    assert after["decode_steps_after_cancel_total"] - before["decode_steps_after_cancel_total"] <= 1
    assert after["active_sequences"] == 0


async def test_cancel_request_from_the_editor_stops_the_model(client: LanguageClient, daemon):
    _configure(client, maxNewTokens=1500, stop="multi_line")
    open_document(client, LONG_URI, LONG_TEXT)
    before = await status(daemon.address)
    pending = asyncio.ensure_future(
        client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(LONG_URI, 2, 0), msg_id="to-cancel"
        )
    )
    await client.partials.wait(lambda p: not field(p, "done"))
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="to-cancel"))
    with pytest.raises(JsonRpcException) as err:
        await pending
    assert err.value.code == types.LSPErrorCodes.RequestCancelled
    for _ in range(50):
        after = await status(daemon.address)
        if after["cancelled_total"] > before["cancelled_total"]:
            break
        await asyncio.sleep(0.05)
    assert after["cancelled_total"] == before["cancelled_total"] + 1
    assert after["decode_steps_after_cancel_total"] - before["decode_steps_after_cancel_total"] <= 1
    assert after["requests_total"] == before["requests_total"] + 1


async def test_result_for_a_changed_document_is_dropped(client: LanguageClient):
    _configure(client, maxNewTokens=200, stop="multi_line")
    open_document(client, LONG_URI, LONG_TEXT)
    pending = asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(LONG_URI, 2, 0))
    )
    await client.partials.wait(lambda p: not field(p, "done"))
    type_text(client, LONG_URI, 2, 0, 0, "# edited\n")
    result = await pending
    assert list(result.items) == []


@pytest.mark.parametrize(
    ("line", "character"),
    [pytest.param(99, 0, id="line-beyond-end"), pytest.param(0, 500, id="column-beyond-end")],
)
async def test_invalid_position_is_a_clear_error(client: LanguageClient, line, character):
    open_document(client, URI, TEXT)
    with pytest.raises(JsonRpcException) as err:
        await client.text_document_inline_completion_async(inline_params(URI, line, character))
    assert err.value.code == types.ErrorCodes.InvalidParams
    assert "outside" in str(err.value) or "beyond" in str(err.value)


async def test_completion_fallback_offers_the_suggestion(client: LanguageClient, daemon):
    open_document(client, URI, TEXT)
    type_text(client, URI, 2, 5, 11, "ab")
    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI),
            position=types.Position(line=5, character=13),
        )
    )
    expected = await direct_completion(
        daemon.address,
        "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return ab",
        "\n",
        max_new_tokens=MAX_NEW,
        stop=StopPolicy.SINGLE_LINE,
    )
    if not expected.strip():
        assert list(result.items) == []
        return
    (item,) = result.items
    assert item.text_edit.new_text == "ab" + expected
    assert item.text_edit.range.start == types.Position(line=5, character=11)
    assert item.text_edit.range.end == types.Position(line=5, character=13)


async def test_status_command_reports_the_daemon(client: LanguageClient, daemon):
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="lspilot.status")
    )
    assert field(result, "protocol_version") == 1
    assert field(result, "model") == "tiny-qwen"
    assert field(result, "address") == daemon.address


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "lspilot", "lsp"]),
    params=["utf-8", "utf-16", "utf-32"],
)
async def encoded_client(lsp_client: LanguageClient, daemon, request):
    lsp_client.encoding = request.param
    lsp_client.init_result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                general=types.GeneralClientCapabilities(position_encodings=[request.param])
            ),
            initialization_options={
                "daemonAddress": daemon.address,
                "autostartDaemon": False,
                "debounceMs": 0,
                "maxNewTokens": MAX_NEW,
                "choicesOnInvoke": 1,
                "stop": "single_line",
                "tokenHealing": False,
            },
        )
    )
    yield
    await lsp_client.shutdown_session()


async def test_positions_after_emoji_and_cjk_follow_the_negotiated_encoding(
    encoded_client: LanguageClient, daemon
):
    client = encoded_client
    assert client.init_result.capabilities.position_encoding == client.encoding
    before_cursor = 's = "😀 漢字 ok" + '
    width = {
        "utf-8": len(before_cursor.encode()),
        "utf-16": len(before_cursor.encode("utf-16-le")) // 2,
        "utf-32": len(before_cursor),
    }[client.encoding]
    open_document(client, URI, f"{before_cursor}\nprint(s)\n")
    result = await client.text_document_inline_completion_async(inline_params(URI, 0, width))
    expected = await direct_completion(
        daemon.address,
        before_cursor,
        "\nprint(s)\n",
        max_new_tokens=MAX_NEW,
        stop=StopPolicy.SINGLE_LINE,
    )
    assert [i.insert_text for i in result.items] == ([expected] if expected.strip() else [])
    assert result.items[0].range.start.character == width


async def test_post_processing_shapes_the_models_text(client: LanguageClient, daemon):
    from lspilot.lsp.core import postprocess as post
    from lspilot.lsp.core.context import infer_indent

    _configure(client, postprocess=True)
    open_document(client, URI, TEXT)
    result = await client.text_document_inline_completion_async(inline_params(URI, 5, 11))
    prefix, suffix = TEXT[: TEXT.rindex("return ") + 7], "\n"
    raw = await direct_completion(
        daemon.address, prefix, suffix, max_new_tokens=MAX_NEW, stop=StopPolicy.SINGLE_LINE
    )
    ctx = post.Context(
        prefix=prefix,
        suffix=suffix,
        language_id="python",
        indent=infer_indent(TEXT),
        policy="single_line",
    )
    shown = post.postprocess(ctx, raw)
    assert [i.insert_text for i in result.items] == ([shown] if shown else [])


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_typing_through_a_suggestion_asks_the_daemon_nothing(client, daemon):
    open_document(client, URI, TEXT)
    first = await client.text_document_inline_completion_async(inline_params(URI, 5, 11))
    suggestion = first.items[0].insert_text
    assert len(suggestion) > 3
    before = await status(daemon.address)
    typed = suggestion[:3]
    type_text(client, URI, 2, 5, 11, typed)
    second = await client.text_document_inline_completion_async(
        inline_params(URI, 5, 11 + _utf16(typed), invoked=False)
    )
    assert [i.insert_text for i in second.items] == [suggestion[3:]]
    after = await status(daemon.address)
    assert after["requests_total"] == before["requests_total"], "a new model request was made"


async def test_typing_through_a_streaming_suggestion_keeps_the_stream(client, daemon):
    _configure(client, maxNewTokens=300, stop="multi_line")
    open_document(client, LONG_URI, LONG_TEXT)
    before = await status(daemon.address)
    first = asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(LONG_URI, 2, 0))
    )
    partial = await client.partials.wait(lambda p: len(field(p, "text")) >= 3)
    typed = field(partial, "text")[:3]
    type_text(client, LONG_URI, 2, 2, 0, typed)
    second = await client.text_document_inline_completion_async(
        inline_params(LONG_URI, 2, _utf16(typed), invoked=False)
    )
    with pytest.raises(JsonRpcException):
        await first  # superseded by the second request, which took over its stream
    after = await status(daemon.address)
    assert after["requests_total"] == before["requests_total"] + 1  # one stream for both
    assert after["cancelled_total"] == before["cancelled_total"]
    full = await direct_completion(
        daemon.address, LONG_TEXT, "", max_new_tokens=300, stop=StopPolicy.MULTI_LINE
    )
    assert [i.insert_text for i in second.items] == [full[3:]]


async def test_a_divergent_keystroke_cancels_the_stream(client, daemon):
    _configure(client, maxNewTokens=1500, stop="multi_line")
    open_document(client, LONG_URI, LONG_TEXT)
    before = await status(daemon.address)
    pending = asyncio.ensure_future(
        client.text_document_inline_completion_async(inline_params(LONG_URI, 2, 0))
    )
    partial = await client.partials.wait(lambda p: not field(p, "done"))
    other = "#" if not field(partial, "text").startswith("#") else "@"
    type_text(client, LONG_URI, 2, 2, 0, other)
    result = await pending
    assert list(result.items) == []  # the document changed under it
    for _ in range(50):
        after = await status(daemon.address)
        if after["active_sequences"] == 0:
            break
        await asyncio.sleep(0.05)
    assert after["cancelled_total"] == before["cancelled_total"] + 1
    assert after["decode_steps_after_cancel_total"] - before["decode_steps_after_cancel_total"] <= 1


async def test_explicit_invocation_offers_several_choices(client: LanguageClient, daemon):
    _configure(client, choicesOnInvoke=3, maxNewTokens=12)
    open_document(client, URI, TEXT)
    before = await status(daemon.address)
    invoked = await client.text_document_inline_completion_async(inline_params(URI, 5, 11))
    texts = [i.insert_text for i in invoked.items]
    assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    greedy = await direct_completion(
        daemon.address,
        TEXT[: TEXT.rindex("return ") + 7],
        "\n",
        max_new_tokens=12,
        stop=StopPolicy.SINGLE_LINE,
    )
    assert texts[0] == greedy  # the first choice is the greedy one
    after = await status(daemon.address)
    assert after["requests_total"] == before["requests_total"] + 2  # one request, n=3; + direct


async def test_show_and_accept_feedback_is_counted_locally(client: LanguageClient):
    client.protocol.notify("lspilot/didShowCompletion", {"uri": URI, "requestId": "r"})
    client.protocol.notify(
        "lspilot/didPartiallyAcceptCompletion", {"uri": URI, "requestId": "r", "acceptedLength": 7}
    )
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="lspilot.status")
    )
    feedback = field(result, "feedback")
    assert [
        field(feedback, k) for k in ("shown", "partially_accepted", "accepted_utf16_units")
    ] == [1, 1, 7]
    assert not [m for m in client.log_messages if "Ignoring notification" in m.message]


async def test_binary_document_gets_no_suggestion_and_a_warning(client: LanguageClient, daemon):
    before = await status(daemon.address)
    open_document(client, "file:///work/blob.py", "x = 1\n\x00\x01\x02 data\n")
    result = await client.text_document_inline_completion_async(
        inline_params("file:///work/blob.py", 0, 4)
    )
    assert list(result.items) == []
    warnings = [m.message for m in client.log_messages if m.type == types.MessageType.Warning]
    assert any("not completing file:///work/blob.py" in m for m in warnings)
    assert (await status(daemon.address))["requests_total"] == before["requests_total"]
