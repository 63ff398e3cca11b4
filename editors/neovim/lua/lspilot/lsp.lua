-- SPDX-License-Identifier: Apache-2.0
--- Starts `lspilot lsp` for the configured filetypes: one client per Neovim, reused by every
--- buffer (the server is cheap; the daemon behind it owns the model).
local config = require("lspilot.config")
local util = require("lspilot.util")

local M = {}

M.name = "lspilot"

function M.capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.general = caps.general or {}
  caps.general.positionEncodings = { config.options.offset_encoding }
  caps.textDocument = caps.textDocument or {}
  -- Neovim < 0.12 does not announce it; this plugin is the inline completion client.
  caps.textDocument.inlineCompletion = { dynamicRegistration = false }
  caps.experimental = vim.tbl_extend("force", caps.experimental or {}, {
    lspilot = { partialCompletion = true },
  })
  return caps
end

function M.wanted(bufnr)
  local o = config.options
  if vim.bo[bufnr].buftype ~= "" then
    return false
  end
  local ft = vim.bo[bufnr].filetype
  if o.filetypes then
    return vim.tbl_contains(o.filetypes, ft)
  end
  return not vim.tbl_contains(o.exclude_filetypes or {}, ft)
end

local function root_dir(bufnr)
  local root = vim.fs.root and vim.fs.root(bufnr, config.options.root_markers) or nil
  return root or vim.fn.getcwd()
end

function M.start(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  if not M.wanted(bufnr) then
    return nil
  end
  local o = config.options
  if vim.fn.executable(o.cmd[1]) ~= 1 then
    vim.notify_once(
      ("lspilot: %q is not executable; install lspilot or set cmd in setup()"):format(o.cmd[1]),
      vim.log.levels.WARN
    )
    return nil
  end
  return vim.lsp.start({
    name = M.name,
    cmd = o.cmd,
    cmd_env = o.cmd_env,
    root_dir = root_dir(bufnr),
    init_options = config.init_options(),
    capabilities = M.capabilities(),
    handlers = {
      ["lspilot/partialCompletion"] = function(err, params, ctx)
        require("lspilot.suggestion").on_partial(err, params, ctx)
      end,
    },
  }, {
    bufnr = bufnr,
    -- One server per editor, whatever the root.
    reuse_client = function(client, cfg)
      return client.name == cfg.name and not util.is_stopped(client)
    end,
  })
end

return M
