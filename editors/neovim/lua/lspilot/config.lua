-- SPDX-License-Identifier: Apache-2.0
--- Options of require("lspilot").setup(), with their defaults.
local M = {}

---@class lspilot.Keymaps
---@field accept string|false
---@field accept_word string|false
---@field accept_line string|false
---@field next string|false
---@field prev string|false
---@field dismiss string|false

---@class lspilot.Config
M.defaults = {
  -- How to start the language server; one server per Neovim, shared by all buffers.
  cmd = { "lspilot", "lsp" },
  -- Extra environment for the server, e.g. { LSPILOT_DAEMON_ADDRESS = "unix:/run/user/1000/lspilot.sock" }.
  cmd_env = nil,
  -- Filetypes to attach to; nil means every normal file buffer not in exclude_filetypes.
  filetypes = nil,
  exclude_filetypes = {
    "help", "gitcommit", "gitrebase", "hgcommit", "svn", "cvs", "qf", "netrw",
    "TelescopePrompt", "lazy", "mason", "oil", "dap-repl",
  },
  -- Markers for the workspace root (reported to the server only).
  root_markers = { ".git", ".hg", "pyproject.toml", "package.json", "Cargo.toml", "go.mod" },
  -- Sent as initializationOptions (nil fields are left out, so the server's defaults apply).
  daemon_address = nil, -- "unix:/path/sock" or "tcp:127.0.0.1:PORT"
  debounce_ms = nil, -- the server's debounce before it asks the model
  max_new_tokens = nil,
  init_options = nil, -- merged over the three above, for options this plugin does not know
  -- Position encoding offered to the server. UTF-16 is what most servers use, so a buffer shared
  -- with other servers keeps one encoding.
  offset_encoding = "utf-16",
  -- Ask for a suggestion while typing; with false, only next()/prev() ask.
  auto_trigger = true,
  -- Client-side delay that merges bursts of events (the server debounces too).
  request_delay_ms = 15,
  -- Neovim >= 0.12 has vim.lsp.inline_completion; true uses it instead of this plugin's ghost
  -- text (no progressive suggestions then).
  use_builtin = false,
  hl_group = "LspilotSuggestion",
  ---@type lspilot.Keymaps|false
  keymaps = {
    accept = "<Tab>", -- falls back to a plain <Tab> when no suggestion is shown
    accept_word = "<M-Right>",
    accept_line = "<M-C-Right>",
    next = "<M-]>",
    prev = "<M-[>",
    dismiss = "<C-]>",
  },
  -- Messages about failed requests: vim.log.levels value, or false for silence.
  log_level = vim.log.levels.WARN,
}

---@type lspilot.Config
M.options = vim.deepcopy(M.defaults)

function M.set(opts)
  opts = opts or {}
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace, they do not merge index by index.
  for _, key in ipairs({ "cmd", "filetypes", "exclude_filetypes", "root_markers" }) do
    if opts[key] ~= nil then
      merged[key] = opts[key]
    end
  end
  if opts.keymaps == false then
    merged.keymaps = false
  end
  M.options = merged
  return merged
end

--- initializationOptions for the server.
function M.init_options()
  local o = M.options
  local init = {
    daemonAddress = o.daemon_address,
    debounceMs = o.debounce_ms,
    maxNewTokens = o.max_new_tokens,
  }
  return vim.tbl_extend("force", init, o.init_options or {})
end

return M
