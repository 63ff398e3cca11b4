-- SPDX-License-Identifier: Apache-2.0
--- Small compatibility layer over the Neovim 0.10 and 0.11+ APIs.
local M = {}

local has_011 = vim.fn.has("nvim-0.11") == 1

--- Byte offset in `line` of the position `index` counted in `encoding` units.
---@param line string
---@param encoding "utf-8"|"utf-16"|"utf-32"
---@param index integer
function M.byteindex(line, encoding, index)
  if encoding == "utf-8" then
    return math.min(index, #line)
  end
  if has_011 then
    return vim.str_byteindex(line, encoding, index, false)
  end
  local ok, b = pcall(vim.str_byteindex, line, index, encoding == "utf-16")
  return ok and b or #line
end

--- Length of `s` in `encoding` units (the unit of LSP columns).
function M.utf_len(s, encoding)
  if encoding == "utf-8" then
    return #s
  end
  if has_011 then
    return vim.str_utfindex(s, encoding, nil, false)
  end
  local u32, u16 = vim.str_utfindex(s)
  return encoding == "utf-16" and u16 or u32
end

function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.request_sync(client, method, params, timeout_ms, bufnr)
  if has_011 then
    return client:request_sync(method, params, timeout_ms, bufnr)
  end
  return client.request_sync(method, params, timeout_ms, bufnr)
end

function M.notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel(client, id)
  if has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

function M.is_stopped(client)
  if has_011 then
    return client:is_stopped()
  end
  return client.is_stopped()
end

function M.client_by_id(id)
  return id and vim.lsp.get_client_by_id(id) or nil
end

--- The lspilot client attached to `bufnr`, if any.
function M.get_client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr, name = "lspilot" })[1]
end

function M.buf_version(bufnr)
  local v = vim.lsp.util.buf_versions[bufnr]
  return v
end

--- Text between two (0-based row, byte col) positions, joined with "\n".
function M.get_text(bufnr, r1, c1, r2, c2)
  local ok, lines = pcall(vim.api.nvim_buf_get_text, bufnr, r1, c1, r2, c2, {})
  if not ok then
    return nil
  end
  return table.concat(lines, "\n")
end

function M.starts_with(s, prefix)
  return s:sub(1, #prefix) == prefix
end

return M
