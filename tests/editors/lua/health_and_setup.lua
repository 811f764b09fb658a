-- setup() validation, :TealTab, and :checkhealth tealtab with the real server.
local H = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))

vim.opt.rtp:prepend(os.getenv('TEALTAB_PLUGIN_DIR'))
vim.cmd.runtime('plugin/tealtab.lua')

H.check(':TealTab exists', vim.fn.exists(':TealTab') == 2)
H.check('nothing loaded before use', package.loaded['tealtab'] == nil)
local tealtab = require('tealtab')
for name, opts in pairs({ type = { debounce_ms = 'soon' }, unknown = { colour = 'teal' },
                          keymap = { keymaps = { jump = '<M-x>' } }, list = { cmd = 'tealtab' } }) do
  H.check('setup rejects a bad ' .. name, not pcall(tealtab.setup, opts))
end
tealtab.setup({
  cmd = vim.json.decode(os.getenv('TEALTAB_SERVER_CMD')),
  settings = { model = 'builtin:gemma-3-270m', device = 'cpu' },
  keymaps = { accept = '<Tab>', dismiss = false },
})
local options = require('tealtab.config').options
H.check('setup merges keymaps', options.keymaps.accept == '<Tab>' and options.keymaps.dismiss == false
  and options.keymaps.next == '<M-]>', options.keymaps)
H.check('word boundaries', require('tealtab.completion').next_word('  foo(bar)') == '  foo'
  and require('tealtab.completion').next_word('(bar)') == '(' and
  require('tealtab.completion').next_line('a b\nc') == 'a b')

H.run(function()
  vim.cmd('stopinsert')
  H.sleep(50)
  vim.cmd('checkhealth tealtab')
  local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
  H.note('report', report)
  H.check('python found', report:find('Python: ', 1, true), report)
  H.check('tealtab importable', report:find('tealtab importable', 1, true), report)
  H.check('server starts', report:find('starts and answers', 1, true), report)
  H.check('model and device', report:find('model builtin:gemma-3-270m ready on cpu', 1, true), report)
  H.check('no errors', not report:find('ERROR', 1, true), report)
end, 200)
