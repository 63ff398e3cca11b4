-- SPDX-License-Identifier: Apache-2.0
--- The suggestion life cycle: ask the server (textDocument/inlineCompletion) while typing, show
--- lspilot/partialCompletion text as it streams in, keep showing the rest of a suggestion while
--- the user types through it, accept it whole or in parts, and drop answers that arrive for a
--- buffer state that is gone (changedtick or cursor moved on).
local config = require("lspilot.config")
local ghost = require("lspilot.ghost")
local util = require("lspilot.util")

local M = {}

local TRIGGER_INVOKED = 1 -- lsp.InlineCompletionTriggerKind
local TRIGGER_AUTOMATIC = 2
local CANCELLED = { [-32800] = true, [-32801] = true, [-32802] = true }

---@class lspilot.Item
---@field text string what to insert at the anchor
---@field replace string text after the anchor on its line that the suggestion replaces
---@field command table? lsp.Command to run after a full accept

---@class lspilot.Snapshot
---@field seq integer
---@field bufnr integer
---@field tick integer
---@field row integer 0-based
---@field col integer bytes
---@field line string
---@field uri string
---@field version integer?
---@field position table
---@field encoding string
---@field client_id integer
---@field id integer? LSP request id
---@field request_id string? the server's id, learnt from partial notifications
---@field kind integer trigger kind
---@field want_index integer? item to show when the answer arrives (next/prev)

---@class lspilot.Current
---@field bufnr integer
---@field row integer anchor row
---@field col integer anchor col (bytes)
---@field items lspilot.Item[]
---@field index integer
---@field final boolean false while only partial text has arrived
---@field invoked boolean the items come from an Invoked request (all choices there are)
---@field request_id string?
---@field uri string
---@field client_id integer
---@field encoding string
---@field shown_reported boolean?

local S = {
  seq = 0,
  ---@type lspilot.Snapshot?
  pending = nil,
  ---@type lspilot.Current?
  current = nil,
  last_key = nil,
  timer = nil,
}

local function log(msg, level)
  local threshold = config.options.log_level
  level = level or vim.log.levels.WARN
  if threshold and level >= threshold then
    vim.notify("lspilot: " .. msg, level)
  end
end

local function in_insert()
  local mode = vim.api.nvim_get_mode().mode
  return mode:sub(1, 1) == "i" or mode:sub(1, 1) == "R"
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return pos[1] - 1, pos[2]
end

local function state_key(bufnr)
  local row, col = cursor()
  return string.format("%d:%d:%d:%d", bufnr, vim.api.nvim_buf_get_changedtick(bufnr), row, col)
end

--- Is the buffer still exactly as it was when `snap` was taken?
local function still_current(snap)
  if vim.api.nvim_get_current_buf() ~= snap.bufnr or not in_insert() then
    return false
  end
  local row, col = cursor()
  return vim.api.nvim_buf_get_changedtick(snap.bufnr) == snap.tick
    and row == snap.row
    and col == snap.col
end

local function cancel_pending()
  local p = S.pending
  S.pending = nil
  if p and p.id then
    local client = util.client_by_id(p.client_id)
    if client then
      pcall(util.cancel, client, p.id)
    end
  end
end

--- The part of the current item not typed yet, with the cursor, or nil when the user's text
--- left the suggestion.
---@return {item: lspilot.Item, rem: string, typed: string, row: integer, col: integer, replace: string}?
local function remainder()
  local cur = S.current
  if not cur or vim.api.nvim_get_current_buf() ~= cur.bufnr then
    return nil
  end
  local item = cur.items[cur.index]
  if not item then
    return nil
  end
  local row, col = cursor()
  if row < cur.row or (row == cur.row and col < cur.col) then
    return nil
  end
  local typed = util.get_text(cur.bufnr, cur.row, cur.col, row, col)
  if not typed or #typed >= #item.text or not util.starts_with(item.text, typed) then
    return nil
  end
  local line = vim.api.nvim_buf_get_lines(cur.bufnr, row, row + 1, false)[1] or ""
  local after = line:sub(col + 1)
  local replace = (item.replace ~= "" and util.starts_with(after, item.replace)) and item.replace
    or ""
  return {
    item = item,
    rem = item.text:sub(#typed + 1),
    typed = typed,
    row = row,
    col = col,
    replace = replace,
  }
end

--- Draws the current suggestion at the cursor; false (and nothing drawn) when there is none
--- or the user's typing diverged from it.
local function render()
  local r = remainder()
  if not r then
    ghost.clear()
    return false
  end
  local lines = vim.split(r.rem, "\n", { plain = true })
  -- A one-line suggestion that ends with the closing characters already after the cursor
  -- shows only what comes before them.
  if #lines == 1 and r.replace ~= "" and lines[1]:sub(-#r.replace) == r.replace then
    lines[1] = lines[1]:sub(1, #lines[1] - #r.replace)
  end
  ghost.show(S.current.bufnr, r.row, r.col, lines, config.options.hl_group)
  local cur = S.current
  if cur.final and not cur.shown_reported then
    cur.shown_reported = true
    local client = util.client_by_id(cur.client_id)
    if client and cur.request_id then
      pcall(util.notify, client, "lspilot/didShowCompletion", {
        uri = cur.uri,
        requestId = cur.request_id,
      })
    end
  end
  return true
end

--- Turns an lsp.InlineCompletionItem into text to insert at the request's cursor.
---@param snap lspilot.Snapshot
---@return lspilot.Item?
local function normalize(snap, raw)
  local text = raw.insertText
  if type(text) == "table" then
    text = text.value -- a snippet string: inserted as written
  end
  if type(text) ~= "string" then
    return nil
  end
  local replace = ""
  local range = raw.range
  if range then
    if range.start.line ~= snap.row or range["end"].line ~= snap.row then
      return nil -- multi-line ranges are not produced by lspilot
    end
    local s = util.byteindex(snap.line, snap.encoding, range.start.character)
    local e = util.byteindex(snap.line, snap.encoding, range["end"].character)
    if s < snap.col then
      local typed = snap.line:sub(s + 1, snap.col)
      if not util.starts_with(text, typed) then
        return nil
      end
      text = text:sub(#typed + 1)
    elseif s > snap.col then
      text = snap.line:sub(snap.col + 1, s) .. text
    end
    if e > snap.col then
      replace = snap.line:sub(snap.col + 1, e)
    end
  end
  if text == "" then
    return nil
  end
  return { text = text, replace = replace, command = raw.command }
end

---@param snap lspilot.Snapshot
local function on_response(snap, err, result)
  if not S.pending or S.pending.seq ~= snap.seq then
    return -- superseded by a newer request
  end
  S.pending = nil
  if err then
    if not CANCELLED[err.code] then
      log("inline completion failed: " .. tostring(err.message))
    end
    return
  end
  if not still_current(snap) then
    return
  end
  local raw_items = result and (result.items or result) or {}
  local items = {}
  for _, raw in ipairs(raw_items) do
    local item = normalize(snap, raw)
    if item then
      items[#items + 1] = item
    end
  end
  if #items == 0 then
    S.current = nil
    ghost.clear()
    return
  end
  local index = 1
  if snap.want_index then
    index = ((snap.want_index - 1) % #items) + 1
  end
  S.current = {
    bufnr = snap.bufnr,
    row = snap.row,
    col = snap.col,
    items = items,
    index = index,
    final = true,
    invoked = snap.kind == TRIGGER_INVOKED,
    request_id = snap.request_id or (snap.id and tostring(snap.id)),
    uri = snap.uri,
    client_id = snap.client_id,
    encoding = snap.encoding,
  }
  render()
end

--- Sends textDocument/inlineCompletion for the cursor, replacing any request in flight.
---@param kind integer?
---@param want_index integer?
function M.request(kind, want_index)
  kind = kind or TRIGGER_AUTOMATIC
  local bufnr = vim.api.nvim_get_current_buf()
  local client = util.get_client(bufnr)
  if not client or not in_insert() then
    return
  end
  cancel_pending()
  local encoding = client.offset_encoding or "utf-16"
  local params = vim.lsp.util.make_position_params(0, encoding)
  params.context = { triggerKind = kind }
  local row, col = cursor()
  S.seq = S.seq + 1
  ---@type lspilot.Snapshot
  local snap = {
    seq = S.seq,
    bufnr = bufnr,
    tick = vim.api.nvim_buf_get_changedtick(bufnr),
    row = row,
    col = col,
    line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or "",
    uri = params.textDocument.uri,
    position = params.position,
    encoding = encoding,
    client_id = client.id,
    kind = kind,
    want_index = want_index,
  }
  S.pending = snap
  local ok, id = util.request(client, "textDocument/inlineCompletion", params, function(err, result)
    on_response(snap, err, result)
  end, bufnr)
  if ok then
    snap.id = id
    snap.version = util.buf_version(bufnr)
  elseif S.pending == snap then
    S.pending = nil
  end
end

--- Handler for the server's lspilot/partialCompletion notification.
function M.on_partial(_, params, ctx)
  local p = S.pending
  if not p or type(params) ~= "table" or type(params.text) ~= "string" then
    return
  end
  if ctx and ctx.client_id and ctx.client_id ~= p.client_id then
    return
  end
  local doc, pos = params.textDocument or {}, params.position or {}
  if doc.uri ~= p.uri or pos.line ~= p.position.line or pos.character ~= p.position.character then
    return
  end
  if doc.version ~= nil and p.version ~= nil and doc.version ~= p.version then
    return
  end
  if p.request_id and params.requestId ~= p.request_id then
    return -- a partial of an earlier request for the same position
  end
  p.request_id = params.requestId
  if params.text == "" or not still_current(p) then
    return
  end
  local cur = S.current
  if cur and cur.final then
    return -- an answer already arrived for this state
  end
  S.current = {
    bufnr = p.bufnr,
    row = p.row,
    col = p.col,
    items = { { text = params.text, replace = "" } },
    index = 1,
    final = false,
    invoked = false,
    request_id = params.requestId,
    uri = p.uri,
    client_id = p.client_id,
    encoding = p.encoding,
  }
  render()
end

local function schedule_request()
  if not config.options.auto_trigger then
    return
  end
  local delay = config.options.request_delay_ms or 0
  S.timer = S.timer or (vim.uv or vim.loop).new_timer()
  S.timer:stop()
  local key = S.last_key
  S.timer:start(
    delay,
    0,
    vim.schedule_wrap(function()
      if S.last_key == key and in_insert() then
        M.request(TRIGGER_AUTOMATIC)
      end
    end)
  )
end

--- TextChangedI, CursorMovedI and InsertEnter: keep a suggestion the user is typing through,
--- otherwise ask again.
function M.on_change()
  local bufnr = vim.api.nvim_get_current_buf()
  local key = state_key(bufnr)
  if key == S.last_key then
    return
  end
  S.last_key = key
  if S.current and render() then
    if S.current.final then
      cancel_pending() -- the shown suggestion still fits: nothing to ask
      return
    end
    -- Only part of it has arrived: keep it on screen while the next request runs.
  else
    S.current = nil
    ghost.clear()
  end
  cancel_pending()
  schedule_request()
end

function M.clear()
  if S.timer then
    S.timer:stop()
  end
  cancel_pending()
  S.current = nil
  S.last_key = nil
  ghost.clear()
end

function M.dismiss()
  M.clear()
  -- Do not ask again before the next change.
  S.last_key = state_key(vim.api.nvim_get_current_buf())
end

function M.is_visible()
  return remainder() ~= nil and ghost.text() ~= nil
end

local WORD = "[%w_\128-\255]+"

local function next_word(rem)
  return rem:match("^[ \t]*" .. WORD)
    or rem:match("^[ \t]*[^%w_\128-\255%s]+")
    or rem:match("^\n[ \t]*")
    or rem:match("^%s+")
    or rem
end

local function next_line(rem)
  return rem:match("^\n?[^\n]*\n?")
end

--- Inserts all or part of the suggestion. `how`: "all", "word" or "line".
function M.accept(how)
  local r = remainder()
  if not r then
    return false
  end
  local cur = assert(S.current)
  local piece = r.rem
  if how == "word" then
    piece = next_word(r.rem)
  elseif how == "line" then
    piece = next_line(r.rem)
  end
  local full = #piece >= #r.rem
  local lines = vim.split(piece, "\n", { plain = true })
  local end_col = r.col + (full and #r.replace or 0)
  vim.api.nvim_buf_set_text(cur.bufnr, r.row, r.col, r.row, end_col, lines)
  local new_row = r.row + #lines - 1
  local new_col = (#lines == 1 and r.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { new_row + 1, new_col })
  local client = util.client_by_id(cur.client_id)
  if full then
    S.current = nil
    ghost.clear()
    if client and r.item.command then
      pcall(util.request, client, "workspace/executeCommand", r.item.command, function() end, cur.bufnr)
    end
  else
    if client and cur.request_id then
      pcall(util.notify, client, "lspilot/didPartiallyAcceptCompletion", {
        uri = cur.uri,
        requestId = cur.request_id,
        acceptedLength = util.utf_len(r.typed .. piece, "utf-16"),
      })
    end
    render()
    S.last_key = state_key(cur.bufnr)
  end
  return true
end

--- Shows the next (step 1) or previous (step -1) choice, asking the server for all its
--- choices (triggerKind Invoked) when only one is known.
function M.cycle(step)
  local cur = S.current
  if not cur or not remainder() then
    M.request(TRIGGER_INVOKED, step > 0 and 1 or 0)
    return
  end
  if #cur.items > 1 then
    cur.index = ((cur.index - 1 + step) % #cur.items) + 1
    render()
  elseif not cur.invoked and remainder() and cur.row == select(1, cursor()) then
    M.request(TRIGGER_INVOKED, step > 0 and 2 or 0)
  end
end

--- State for tests and :checkhealth.
function M.state()
  local cur = S.current
  return {
    pending = S.pending ~= nil,
    pending_seq = S.pending and S.pending.seq or nil,
    seq = S.seq,
    items = cur and vim.tbl_map(function(i)
      return i.text
    end, cur.items) or {},
    index = cur and cur.index or nil,
    final = cur and cur.final or nil,
    shown = ghost.text(),
  }
end

return M
