---@mod tealtab.config Options, their defaults and their validation.

local M = {}

---@class tealtab.Keymaps
---@field accept string|false Accept the whole candidate (default `<M-l>`).
---@field accept_word string|false Accept the next word (default `<M-w>`).
---@field accept_line string|false Accept the rest of the line (default `<M-j>`).
---@field next string|false Show the next candidate (default `<M-]>`).
---@field prev string|false Show the previous candidate (default `<M-[>`).
---@field dismiss string|false Hide the ghost text (default `<C-]>`).

---@class tealtab.Config
---@field cmd string[] Command that starts the server (default `{ "tealtab", "lsp" }`).
---@field filetypes string[] Filetypes the server is started for.
---@field settings table<string, any> Server settings (`model`, `device`, `candidates`, `remoteModel`, ...), see |tealtab-settings|; the server validates them.
---@field debounce_ms integer Delay after the last keystroke before a request (the upper bound with `adaptive_debounce`).
---@field adaptive_debounce boolean Shorten the delay when the server answers fast (|tealtab-debounce|).
---@field auto_trigger boolean Request automatically while typing.
---@field keymaps tealtab.Keymaps Insert-mode keys (buffer-local); `false` disables one.
---@field hl_group string Highlight group of the ghost text.
---@field log_acceptance boolean Tell the server what was shown and accepted (stays on this machine).
---@field root_markers string[] Files that mark a project root (the server's root folder).

---@type tealtab.Config
M.defaults = {
  cmd = { 'tealtab', 'lsp' },
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'lua',
    'rust', 'go', 'c', 'cpp', 'java', 'sh', 'ruby', 'php', 'cs', 'kotlin', 'scala', 'swift',
  },
  settings = {},
  debounce_ms = 150,
  adaptive_debounce = true,
  auto_trigger = true,
  keymaps = {
    accept = '<M-l>',
    accept_word = '<M-w>',
    accept_line = '<M-j>',
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
  },
  hl_group = 'TealTabGhost',
  log_acceptance = true,
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'Cargo.toml', 'go.mod' },
}

---@type tealtab.Config
M.options = vim.deepcopy(M.defaults)

local function check(name, value, kind, optional)
  if vim.fn.has('nvim-0.11') == 1 then
    vim.validate(name, value, kind, optional)
  else
    vim.validate({ [name] = { value, kind, optional } })
  end
end

local function string_list(value)
  if type(value) ~= 'table' then
    return false
  end
  for _, item in ipairs(value) do
    if type(item) ~= 'string' then
      return false
    end
  end
  return true
end

local function key_or_false(value)
  return value == false or type(value) == 'string'
end

---Check `opts` (a partial config); raises with the offending key.
---@param opts table
function M.validate(opts)
  check('opts', opts, 'table')
  check('cmd', opts.cmd, string_list, true)
  check('filetypes', opts.filetypes, string_list, true)
  check('settings', opts.settings, 'table', true)
  check('debounce_ms', opts.debounce_ms, 'number', true)
  if type(opts.debounce_ms) == 'number' and opts.debounce_ms < 0 then
    error('tealtab: debounce_ms must be 0 or more')
  end
  check('adaptive_debounce', opts.adaptive_debounce, 'boolean', true)
  check('auto_trigger', opts.auto_trigger, 'boolean', true)
  check('keymaps', opts.keymaps, 'table', true)
  check('hl_group', opts.hl_group, 'string', true)
  check('log_acceptance', opts.log_acceptance, 'boolean', true)
  check('root_markers', opts.root_markers, string_list, true)
  for name, value in pairs(opts.keymaps or {}) do
    if M.defaults.keymaps[name] == nil then
      error(('tealtab: unknown keymap %q'):format(name))
    end
    check('keymaps.' .. name, value, key_or_false)
  end
  for name in pairs(opts) do
    if M.defaults[name] == nil then
      error(('tealtab: unknown option %q'):format(name))
    end
  end
end

---Merge `opts` into the current options (lists replace, tables merge).
---@param opts? table
---@return tealtab.Config
function M.set(opts)
  opts = opts or {}
  M.validate(opts)
  local merged = vim.deepcopy(M.defaults)
  for name, value in pairs(opts) do
    if name == 'keymaps' or name == 'settings' then
      merged[name] = vim.tbl_extend('force', merged[name], value)
    else
      merged[name] = vim.deepcopy(value)
    end
  end
  M.options = merged
  return merged
end

return M
