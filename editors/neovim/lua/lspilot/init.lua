-- SPDX-License-Identifier: Apache-2.0
--- lspilot: local AI code completion. setup() starts `lspilot lsp` for the configured
--- filetypes and shows its suggestions as ghost text while typing.
---
--- Public API: setup, accept, accept_word, accept_line, next, prev, dismiss, is_visible,
--- request, status.
local config = require("lspilot.config")

local M = {}

local group

local function builtin_available()
  return vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.enable ~= nil
end

local function use_builtin()
  return config.options.use_builtin and builtin_available()
end

local function set_keymaps()
  local keys = config.options.keymaps
  if not keys then
    return
  end
  local function map(lhs, rhs, desc, opts)
    if lhs then
      vim.keymap.set("i", lhs, rhs, vim.tbl_extend("force", { silent = true, desc = desc }, opts or {}))
    end
  end
  -- <Tab> only takes the suggestion when one is shown; otherwise it stays <Tab>.
  map(keys.accept, function()
    if use_builtin() then
      -- get() applies the candidate on the next tick, so it is safe in an <expr> mapping.
      if vim.lsp.inline_completion.get() then
        return ""
      end
    elseif M.is_visible() then
      return "<Cmd>lua require('lspilot').accept()<CR>"
    end
    return keys.accept -- the key itself, not remapped
  end, "lspilot: accept suggestion", { expr = true, replace_keycodes = true })
  map(keys.accept_word, M.accept_word, "lspilot: accept next word")
  map(keys.accept_line, M.accept_line, "lspilot: accept next line")
  map(keys.next, M.next, "lspilot: next suggestion")
  map(keys.prev, M.prev, "lspilot: previous suggestion")
  map(keys.dismiss, M.dismiss, "lspilot: dismiss suggestion")
end

---@param opts lspilot.Config?
function M.setup(opts)
  config.set(opts)
  vim.api.nvim_set_hl(0, config.options.hl_group, { link = "Comment", default = true })
  group = vim.api.nvim_create_augroup("lspilot", { clear = true })
  local lsp = require("lspilot.lsp")
  local suggestion = require("lspilot.suggestion")

  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    callback = function(ev)
      lsp.start(ev.buf)
    end,
  })
  -- Buffers opened before setup() (lazy loading).
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.bo[buf].filetype ~= "" then
      lsp.start(buf)
    end
  end

  if use_builtin() then
    vim.api.nvim_create_autocmd("LspAttach", {
      group = group,
      callback = function(ev)
        local client = vim.lsp.get_client_by_id(ev.data.client_id)
        if client and client.name == lsp.name then
          vim.lsp.inline_completion.enable(true, { bufnr = ev.buf })
        end
      end,
    })
  else
    vim.api.nvim_create_autocmd({ "InsertEnter", "TextChangedI", "CursorMovedI" }, {
      group = group,
      callback = function(ev)
        if require("lspilot.util").get_client(ev.buf) then
          suggestion.on_change()
        end
      end,
    })
    -- A server that finishes starting while the user already types gets asked at once.
    vim.api.nvim_create_autocmd("LspAttach", {
      group = group,
      callback = function(ev)
        local client = vim.lsp.get_client_by_id(ev.data.client_id)
        if client and client.name == lsp.name and ev.buf == vim.api.nvim_get_current_buf() then
          vim.schedule(function()
            local mode = vim.api.nvim_get_mode().mode
            if mode:sub(1, 1) == "i" then
              suggestion.on_change()
            end
          end)
        end
      end,
    })
    vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
      group = group,
      callback = function()
        suggestion.clear()
      end,
    })
  end
  set_keymaps()
end

--- Accepts the whole suggestion. Returns false when none is shown.
function M.accept()
  if use_builtin() then
    return vim.lsp.inline_completion.get() or false
  end
  return require("lspilot.suggestion").accept("all")
end

--- Accepts the next word; the rest stays shown.
function M.accept_word()
  return require("lspilot.suggestion").accept("word")
end

--- Accepts up to and including the next line break; the rest stays shown.
function M.accept_line()
  return require("lspilot.suggestion").accept("line")
end

function M.next()
  if use_builtin() then
    return vim.lsp.inline_completion.select({ count = 1 })
  end
  require("lspilot.suggestion").cycle(1)
end

function M.prev()
  if use_builtin() then
    return vim.lsp.inline_completion.select({ count = -1 })
  end
  require("lspilot.suggestion").cycle(-1)
end

function M.dismiss()
  require("lspilot.suggestion").dismiss()
end

function M.is_visible()
  return require("lspilot.suggestion").is_visible()
end

--- Asks for a suggestion now (as if invoked by the user).
function M.request()
  require("lspilot.suggestion").request(1)
end

--- The plugin's state: pending request, known items, shown text.
function M.status()
  return require("lspilot.suggestion").state()
end

--- The server's and daemon's status (workspace/executeCommand lspilot.status), or nil, err.
function M.server_status(timeout_ms)
  local util = require("lspilot.util")
  local client = util.get_client(0) or vim.lsp.get_clients({ name = "lspilot" })[1]
  if not client then
    return nil, "no lspilot client running"
  end
  local resp, err = util.request_sync(
    client,
    "workspace/executeCommand",
    { command = "lspilot.status", arguments = {} },
    timeout_ms or 5000,
    0
  )
  if not resp then
    return nil, tostring(err)
  end
  if resp.err then
    return nil, resp.err.message or vim.inspect(resp.err)
  end
  return resp.result, nil
end

return M
