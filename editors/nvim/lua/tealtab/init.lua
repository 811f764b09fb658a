---@mod tealtab Local code completion as ghost text, from the tealtab language server.
---
--- Works without setup(): the plugin file starts the server for the default
--- filetypes. Call setup() only to change options, see |tealtab-options|.

local M = {}

local attached = {} ---@type table<integer, boolean>

---Set options (merged over the defaults and validated) and attach to open buffers.
---@param opts? tealtab.Config|table
function M.setup(opts)
  local config = require('tealtab.config')
  config.set(opts)
  vim.api.nvim_set_hl(0, 'TealTabGhost', { link = 'Comment', default = true })
  require('tealtab.completion').enabled = config.options.settings.enable ~= false
  require('tealtab.server').push_settings()
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
      M.attach(bufnr)
    end
  end
end

local function map(bufnr, lhs, action, desc)
  if not lhs then
    return
  end
  vim.keymap.set('i', lhs, function()
    if not action() then
      -- Nothing to act on: the key does what it did before.
      vim.api.nvim_feedkeys(vim.keycode(lhs), 'n', false)
    end
  end, { buffer = bufnr, desc = 'tealtab: ' .. desc, silent = true })
end

---Start the server for `bufnr` (when its filetype is served) and set the keymaps and autocmds.
---@param bufnr? integer
---@return boolean attached
function M.attach(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local server = require('tealtab.server')
  if not vim.api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= ''
    or not server.serves(vim.bo[bufnr].filetype) then
    return false
  end
  vim.api.nvim_set_hl(0, 'TealTabGhost', { link = 'Comment', default = true })
  if not server.start(bufnr) then
    return false
  end
  if attached[bufnr] then
    return true
  end
  attached[bufnr] = true
  local completion = require('tealtab.completion')
  local keys = require('tealtab.config').options.keymaps
  map(bufnr, keys.accept, function() return completion.accept('all', bufnr) end, 'accept')
  map(bufnr, keys.accept_word, function() return completion.accept('word', bufnr) end, 'accept word')
  map(bufnr, keys.accept_line, function() return completion.accept('line', bufnr) end, 'accept line')
  map(bufnr, keys.next, function() return completion.cycle(1, bufnr) end, 'next candidate')
  map(bufnr, keys.prev, function() return completion.cycle(-1, bufnr) end, 'previous candidate')
  map(bufnr, keys.dismiss, function() return completion.dismiss(bufnr) end, 'dismiss')

  local group = vim.api.nvim_create_augroup('tealtab.buffer.' .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd({ 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      completion.on_edit(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      completion.clear(bufnr)
    end,
  })
  vim.api.nvim_create_autocmd('BufUnload', {
    group = group,
    buffer = bufnr,
    callback = function()
      attached[bufnr] = nil
      completion.detach(bufnr)
      pcall(vim.api.nvim_del_augroup_by_id, group)
    end,
  })
  return true
end

---Accept the whole candidate on screen; false when none is shown.
---@return boolean
function M.accept()
  return require('tealtab.completion').accept('all')
end

---Accept the next word of the candidate on screen.
---@return boolean
function M.accept_word()
  return require('tealtab.completion').accept('word')
end

---Accept the rest of the line of the candidate on screen.
---@return boolean
function M.accept_line()
  return require('tealtab.completion').accept('line')
end

---Show the next candidate.
---@return boolean
function M.next()
  return require('tealtab.completion').cycle(1)
end

---Show the previous candidate.
---@return boolean
function M.prev()
  return require('tealtab.completion').cycle(-1)
end

---Hide the ghost text.
---@return boolean
function M.dismiss()
  return require('tealtab.completion').dismiss()
end

---Ask for a completion at the cursor now.
function M.trigger()
  require('tealtab.completion').request(nil, true)
end

---Turn completions on or off (also tells the server, so its status says "disabled").
---@param enable boolean
function M.enable(enable)
  local config = require('tealtab.config')
  local completion = require('tealtab.completion')
  completion.enabled = enable
  config.options.settings.enable = enable
  if not enable then
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      completion.clear(bufnr)
    end
  end
  require('tealtab.server').push_settings()
end

---@return boolean
function M.is_enabled()
  return require('tealtab.completion').enabled
end

---Load another model (a built-in name, Hugging Face id, folder, .gguf file, or a remote endpoint:
---`openai:URL`, `llamacpp:URL`, `ollama:URL`; its served name is `settings.remoteModel`).
---@param name string
function M.set_model(name)
  require('tealtab.config').options.settings.model = name
  require('tealtab.debounce').reset() -- another model answers at another speed
  require('tealtab.server').push_settings()
end

return M
