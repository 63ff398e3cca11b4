-- SPDX-License-Identifier: Apache-2.0
--- Ghost text: one extmark at the cursor, the first line of the suggestion as inline virtual
--- text, the other lines as virtual lines below. Only ever one extmark in the namespace.
local M = {}

M.ns = vim.api.nvim_create_namespace("lspilot")

local has_inline = vim.fn.has("nvim-0.10") == 1

---@type {bufnr: integer, id: integer}?
local mark

function M.clear()
  if mark and vim.api.nvim_buf_is_valid(mark.bufnr) then
    vim.api.nvim_buf_clear_namespace(mark.bufnr, M.ns, 0, -1)
  end
  mark = nil
end

--- Draws `lines` (the suggestion split on "\n") at (row, col), 0-based, col in bytes.
---@param lines string[]
function M.show(bufnr, row, col, lines, hl_group)
  if mark and mark.bufnr ~= bufnr then
    M.clear()
  end
  local opts = {
    id = mark and mark.id or nil,
    hl_mode = "combine",
    -- Stay before text inserted at the cursor until the next redraw moves the mark.
    right_gravity = false,
    priority = 200,
  }
  if lines[1] ~= "" then
    opts.virt_text = { { lines[1], hl_group } }
    -- Neovim draws the cursor after inline virtual text at its position. At the end of the
    -- line an overlay keeps the cursor before the suggestion (on its first character); in the
    -- middle of a line only inline text moves the rest of the line out of the way.
    local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
    if col >= #line then
      opts.virt_text_pos = "overlay"
    else
      opts.virt_text_pos = has_inline and "inline" or "eol"
    end
  end
  if #lines > 1 then
    local virt_lines = {}
    for i = 2, #lines do
      virt_lines[#virt_lines + 1] = { { lines[i], hl_group } }
    end
    opts.virt_lines = virt_lines
  end
  local ok, id = pcall(vim.api.nvim_buf_set_extmark, bufnr, M.ns, row, col, opts)
  if ok then
    mark = { bufnr = bufnr, id = id }
  else
    M.clear()
  end
end

--- What is drawn now, as the text it stands for ("\n" between lines), or nil.
function M.text()
  if not mark or not vim.api.nvim_buf_is_valid(mark.bufnr) then
    return nil
  end
  local m = vim.api.nvim_buf_get_extmark_by_id(mark.bufnr, M.ns, mark.id, { details = true })
  if not m or not m[3] then
    return nil
  end
  local parts = {}
  for _, chunk in ipairs(m[3].virt_text or {}) do
    parts[#parts + 1] = chunk[1]
  end
  local out = { table.concat(parts) }
  for _, vl in ipairs(m[3].virt_lines or {}) do
    local line = {}
    for _, chunk in ipairs(vl) do
      line[#line + 1] = chunk[1]
    end
    out[#out + 1] = table.concat(line)
  end
  return table.concat(out, "\n")
end

return M
