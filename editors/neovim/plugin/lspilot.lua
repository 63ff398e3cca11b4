-- SPDX-License-Identifier: Apache-2.0
-- Commands only; nothing starts before require("lspilot").setup().
if vim.g.loaded_lspilot then
  return
end
vim.g.loaded_lspilot = true

vim.api.nvim_create_user_command("LspilotStatus", function()
  local status, err = require("lspilot").server_status()
  if status then
    vim.print(status)
  else
    vim.notify("lspilot: " .. tostring(err), vim.log.levels.ERROR)
  end
end, { desc = "Show the lspilot daemon status" })

vim.api.nvim_create_user_command("LspilotToggle", function()
  local config = require("lspilot.config")
  config.options.auto_trigger = not config.options.auto_trigger
  if not config.options.auto_trigger then
    require("lspilot").dismiss()
  end
  vim.notify("lspilot: automatic suggestions " .. (config.options.auto_trigger and "on" or "off"))
end, { desc = "Turn automatic lspilot suggestions on or off" })
