-- Neovim 0.12's own vim.lsp.inline_completion with the real server, no plugin.
local H = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))

vim.lsp.config('tealtab', {
  cmd = vim.json.decode(os.getenv('TEALTAB_SERVER_CMD')),
  filetypes = { 'python' },
  init_options = { model = 'builtin:gemma-3-270m', device = 'cpu', maxNewTokens = 16, candidates = 2 },
})
vim.lsp.enable('tealtab')
vim.lsp.inline_completion.enable()

vim.cmd.edit(os.getenv('TEALTAB_FILE'))
local buf = vim.api.nvim_get_current_buf()
local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
local PROMPT = {
  'def read_file(path):',
  '    with open(path, encoding="utf-8") as handle:',
  '        ',
}

H.run(function()
  local client = H.wait(function() return vim.lsp.get_clients({ bufnr = buf, name = 'tealtab' })[1] end, 20000)
  if not H.check('client attached', client) then
    return
  end
  local ready = H.wait(function()
    local answer
    client:request('tealtab/status', vim.empty_dict(), function(_, s) answer = s or false end, buf)
    H.wait(function() return answer ~= nil end, 5000)
    return answer and answer.state ~= 'loading' and answer
  end, 120000)
  H.check('model ready', ready and ready.state == 'ready', ready)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, PROMPT)
  vim.api.nvim_win_set_cursor(0, { #PROMPT, #PROMPT[#PROMPT] })
  H.type('return handle.re')
  local marks = H.wait(function()
    local found = vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })
    return #found > 0 and found
  end, 60000)
  if not H.check('ghost text appears', marks) then
    return
  end
  local before = H.lines(buf)[#PROMPT]
  H.note('ghost', marks[1][4].virt_text)
  H.check('get() accepts', vim.lsp.inline_completion.get())
  H.wait(function() return H.lines(buf)[#PROMPT] ~= before end, 5000)
  local after = H.lines(buf)[#PROMPT]
  H.note('line', after)
  H.check('the completion is inserted', #after > #before and after:sub(1, #before) == before,
    { before = before, after = after })
  vim.api.nvim_input('<Esc>')
end, 240)
