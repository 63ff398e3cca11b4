-- SPDX-License-Identifier: Apache-2.0
--- :checkhealth lspilot — Neovim version, the server command, the running client, and the
--- daemon and model behind it (workspace/executeCommand lspilot.status).
local M = {}

function M.check()
  local health = vim.health
  local config = require("lspilot.config")
  local o = config.options

  health.start("lspilot: editor")
  local v = vim.version()
  local version = string.format("%d.%d.%d", v.major, v.minor, v.patch)
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. version)
  else
    health.error("Neovim " .. version .. ": lspilot needs 0.10 or newer (inline virtual text)")
  end
  if vim.lsp.inline_completion and vim.lsp.inline_completion.enable then
    health.info(
      "built-in vim.lsp.inline_completion available; "
        .. (o.use_builtin and "in use (use_builtin = true)" or "not used (use_builtin = false)")
    )
  else
    health.info("ghost text drawn by this plugin (no built-in inline completion before 0.12)")
  end

  health.start("lspilot: language server")
  local exe = o.cmd[1]
  if vim.fn.executable(exe) == 1 then
    health.ok(("server command: %s (%s)"):format(table.concat(o.cmd, " "), vim.fn.exepath(exe)))
  else
    health.error(("%q is not executable"):format(exe), {
      "pip install lspilot, or set cmd = { '/path/to/lspilot', 'lsp' } in setup()",
    })
  end
  local client = vim.lsp.get_clients({ name = "lspilot" })[1]
  if not client then
    health.warn("no lspilot client running", {
      "open a file of a configured filetype, then run :checkhealth lspilot again",
    })
    return
  end
  health.ok(
    ("client %d running, position encoding %s, attached to %d buffer(s)"):format(
      client.id,
      client.offset_encoding or "?",
      vim.tbl_count(client.attached_buffers or {})
    )
  )
  local caps = client.server_capabilities or {}
  if caps.inlineCompletionProvider then
    health.ok("server offers textDocument/inlineCompletion")
  else
    health.error("server does not offer textDocument/inlineCompletion")
  end

  health.start("lspilot: daemon and model")
  local status, err = require("lspilot").server_status(5000)
  if not status then
    health.error("lspilot.status failed: " .. tostring(err), {
      "is the daemon running? `lspilot daemon`, or check daemon_address / LSPILOT_DAEMON_ADDRESS",
    })
    return
  end
  if type(status) ~= "table" then
    health.warn("lspilot.status answered " .. vim.inspect(status))
    return
  end
  health.ok(("model: %s"):format(tostring(status.model or "?")))
  health.ok(("device: %s"):format(tostring(status.device or "?")))
  local keys = vim.tbl_keys(status)
  table.sort(keys)
  for _, k in ipairs(keys) do
    if k ~= "model" and k ~= "device" then
      local val = status[k]
      health.info(("%s: %s"):format(k, type(val) == "table" and vim.inspect(val) or tostring(val)))
    end
  end
end

return M
