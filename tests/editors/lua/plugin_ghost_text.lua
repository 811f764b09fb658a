-- The plugin against the real server and model: ghost text, accept (all, word,
-- line) and the accept notifications (after the didChange, with position and
-- version), cycling, stale answers, dismiss, the adaptive debounce's
-- measurements. Environment: TEALTAB_PLUGIN_DIR, TEALTAB_SERVER_CMD (JSON
-- list), TEALTAB_FILE, TEALTAB_RESULT.
local H = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))

vim.opt.rtp:prepend(os.getenv('TEALTAB_PLUGIN_DIR'))
vim.cmd.runtime('plugin/tealtab.lua')
local tealtab = require('tealtab')
tealtab.setup({
  cmd = vim.json.decode(os.getenv('TEALTAB_SERVER_CMD')),
  settings = { model = 'builtin:gemma-3-270m', device = 'cpu', maxNewTokens = 16, candidates = 3,
               temperature = 0.8 },
  debounce_ms = 50,
})
local completion = require('tealtab.completion')
local ghost = require('tealtab.ghost')
local server = require('tealtab.server')

local PROMPT = {
  'import os',
  '',
  '',
  'def read_file(path):',
  '    with open(path, encoding="utf-8") as handle:',
  '        return handle.read()',
  '',
  '',
  'def write_file(path, text):',
  '    with open(path, "w", encoding="utf-8") as handle:',
  '        ',
}

vim.cmd.edit(os.getenv('TEALTAB_FILE'))
local buf = vim.api.nvim_get_current_buf()

-- Every notification the client writes to the server, in order (client.rpc.notify is the write).
local sent = {}
local function record_notifications(client)
  local notify = client.rpc.notify
  client.rpc.notify = function(method, params)
    sent[#sent + 1] = { method = method, params = vim.deepcopy(params) }
    return notify(method, params)
  end
end

-- The last notification `method` sent since index `from`, its index, and the last didChange before it.
local function last_sent(method, from)
  local index
  for i = #sent, from + 1, -1 do
    if sent[i].method == method then
      index = i
      break
    end
  end
  if not index then
    return nil
  end
  for i = index - 1, 1, -1 do
    if sent[i].method == 'textDocument/didChange' then
      return sent[index].params, index, sent[i].params, i
    end
  end
  return sent[index].params, index, nil, nil
end

-- `position`/`version` of an accept notification: the cursor after the insertion (UTF-8 or
-- UTF-16 as negotiated), the buffer's version, sent after the didChange of that version.
local function check_accept(name, method, from, want_row, want_col, extra)
  local params, index, change, change_index = last_sent(method, from)
  if not H.check(name .. ': sent', params ~= nil, vim.tbl_map(function(m) return m.method end, sent)) then
    return
  end
  local encoding = server.client(buf).offset_encoding
  local line = vim.api.nvim_buf_get_lines(buf, want_row - 1, want_row, false)[1]
  local character = want_col
  if encoding ~= 'utf-8' then
    character = vim.fn.has('nvim-0.11') == 1 and vim.str_utfindex(line, encoding, want_col, false)
      or select(encoding == 'utf-16' and 2 or 1, vim.str_utfindex(line, want_col))
  end
  H.check(name .. ': position after the inserted text', params.position ~= nil
    and params.position.line == want_row - 1 and params.position.character == character,
    { position = params.position, want = { line = want_row - 1, character = character } })
  H.check(name .. ': version of the buffer', params.version == vim.lsp.util.buf_versions[buf]
    and params.version == vim.api.nvim_buf_get_changedtick(buf), { params.version, vim.lsp.util.buf_versions[buf] })
  H.check(name .. ': after the didChange of that version', change ~= nil and change_index < index
    and change.textDocument.version == params.version and change.textDocument.uri == params.uri,
    { change = change and change.textDocument, accept = params })
  H.check(name .. ': the statistics fields', params.uri == vim.uri_from_bufnr(buf) and params.languageId == 'python'
    and type(params.index) == 'number' and type(params.count) == 'number' and type(params.length) == 'number'
    and type(params.acceptedLength) == 'number' and type(params.latencyMs) == 'number', params)
  for key, value in pairs(extra or {}) do
    H.check(name .. ': ' .. key, params[key] == value, { got = params[key], want = value })
  end
  return params
end

local function status()
  local result
  server.status(function(_, s) result = s or false end)
  H.wait(function() return result ~= nil end, 5000)
  return result
end

-- Put the prompt in the buffer with the cursor at its end, then type `keys`
-- and wait for ghost text. Returns the ghost text (or nil) and the lines and
-- cursor it belongs to.
local function prompt_and_type(keys)
  completion.clear(buf)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, PROMPT)
  vim.api.nvim_win_set_cursor(0, { #PROMPT, #PROMPT[#PROMPT] })
  H.type(keys)
  local text = H.wait(function() return ghost.text(buf) end, 60000)
  return text, H.lines(buf), vim.api.nvim_win_get_cursor(0)
end

-- The buffer `lines` with `text` inserted at `pos` ({row 1-based, byte col}).
local function inserted(lines, pos, text)
  local line = lines[pos[1]]
  local joined = line:sub(1, pos[2]) .. text .. line:sub(pos[2] + 1)
  local result = vim.list_slice(lines, 1, pos[1] - 1)
  vim.list_extend(result, vim.split(joined, '\n', { plain = true }))
  vim.list_extend(result, vim.list_slice(lines, pos[1] + 1))
  return result
end

H.run(function()
  H.check('client attached', H.wait(function() return server.client(buf) end, 20000))
  local ready = H.wait(function()
    local s = status()
    return s and s.state ~= 'loading' and s
  end, 120000)
  H.check('model ready', ready and ready.state == 'ready', ready)
  H.note('encoding', server.client(buf).offset_encoding)
  record_notifications(server.client(buf))

  -- Ghost text, then accept all: exactly the shown text is inserted.
  local text, lines, pos = prompt_and_type('handle.wr')
  H.note('ghost', text)
  if H.check('ghost text appears', text ~= nil, completion.stats) then
    local marks = vim.api.nvim_buf_get_extmarks(buf, ghost.ns, 0, -1, { details = true })
    H.check('one extmark at the cursor', #marks == 1 and marks[1][2] == pos[1] - 1 and marks[1][3] == pos[2], marks)
    -- At the end of the line an overlay (the cursor stays before the ghost text); before text, inline.
    local at_eol = pos[2] >= #vim.api.nvim_buf_get_lines(buf, pos[1] - 1, pos[1], false)[1]
    H.check('first line at the cursor', marks[1][4].virt_text_pos == (at_eol and 'overlay' or 'inline'), marks[1][4])
    H.check('more lines as virt_lines', #vim.split(text, '\n') == 1 + #(marks[1][4].virt_lines or {}), marks[1][4])
    local from = #sent
    H.type('<M-l>')
    H.check('accept inserts the shown text', vim.deep_equal(H.lines(buf), inserted(lines, pos, text)),
      { got = H.lines(buf), want = inserted(lines, pos, text) })
    local want_pos = inserted({ lines[pos[1]]:sub(1, pos[2]) }, { 1, pos[2] }, text)
    H.check('cursor after the inserted text', vim.api.nvim_win_get_cursor(0)[1] == pos[1] + #want_pos - 1
      and vim.api.nvim_win_get_cursor(0)[2] == #want_pos[#want_pos], vim.api.nvim_win_get_cursor(0))
    local accepted = check_accept('didAccept', 'tealtab/didAccept', from, pos[1] + #want_pos - 1, #want_pos[#want_pos],
      { acceptedLength = vim.fn.strchars(text), length = vim.fn.strchars(text) })
    H.note('didAccept', accepted)
  end

  -- Accept word: a word (or run of punctuation) of the shown text, the rest stays shown.
  text, lines, pos = prompt_and_type('f = ')
  H.note('ghost_word', text)
  if H.check('ghost text for word accept', text ~= nil, completion.stats) then
    local from = #sent
    H.type('<M-w>')
    local now = H.lines(buf)
    local cursor = vim.api.nvim_win_get_cursor(0)
    local typed = table.concat(vim.api.nvim_buf_get_text(buf, pos[1] - 1, pos[2], cursor[1] - 1, cursor[2], {}), '\n')
    H.check('accept word inserts a prefix', typed ~= '' and text:sub(1, #typed) == typed
      and vim.deep_equal(now, inserted(lines, pos, typed)), { typed = typed, text = text })
    H.check('accept word takes one word', typed:match('^%s*[%w_]+$') or typed:match('^%s*[^%w_%s]+$')
      or typed:match('^\n%s*$'), typed)
    H.check('the rest stays shown', typed == text or ghost.text(buf) == text:sub(#typed + 1),
      { shown = ghost.text(buf), typed = typed, text = text })
    local method = typed == text and 'tealtab/didAccept' or 'tealtab/didPartialAccept'
    H.note('didPartialAccept', check_accept('word accept', method, from, cursor[1], cursor[2],
      { acceptedLength = vim.fn.strchars(typed), kind = typed ~= text and 'word' or nil }))
  end

  -- Accept line: the shown text up to the end of its first line.
  text, lines, pos = prompt_and_type('for line in ')
  H.note('ghost_line', text)
  if H.check('ghost text for line accept', text ~= nil, completion.stats) then
    H.type('<M-j>')
    local want = text:match('^\n[^\n]*') or text:match('^[^\n]+')
    H.check('accept line inserts the first line', vim.deep_equal(H.lines(buf), inserted(lines, pos, want)),
      { got = H.lines(buf), want = want })
  end

  -- Cycling: another candidate when there is one; wraps around either way.
  text, lines, pos = prompt_and_type('# ')
  if H.check('ghost text for cycling', text ~= nil, completion.stats) then
    local _, _, count = completion.visible(buf)
    H.note('candidates', count)
    local seen = { text }
    for _ = 1, count do
      H.type('<M-]>')
      seen[#seen + 1] = ghost.text(buf)
    end
    H.note('cycled', seen)
    H.check('next wraps around to the first', seen[#seen] == text, seen)
    if count > 1 then
      H.check('next shows another candidate', seen[2] ~= nil and seen[2] ~= text, seen)
    end
    H.type('<M-[>')
    H.check('previous shows the last candidate', ghost.text(buf) == seen[count], { ghost.text(buf), seen })
    H.check('cycling does not edit', vim.deep_equal(H.lines(buf), lines))
    H.type('<C-]>')
    H.check('dismiss hides the ghost text', ghost.text(buf) == nil and vim.deep_equal(H.lines(buf), lines))
  end

  -- A stale answer: the buffer changes while the request is on its way.
  require('tealtab.config').options.auto_trigger = false
  completion.clear(buf)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, PROMPT)
  vim.api.nvim_win_set_cursor(0, { #PROMPT, #PROMPT[#PROMPT] })
  H.sleep(50)
  local before = vim.deepcopy(completion.stats)
  -- Typing normally cancels the request; keep it alive here so that its
  -- answer really arrives after the edit, and must be dropped.
  local cancel = server.cancel
  server.cancel = function() end
  completion.request(buf)
  H.type('x')
  H.wait(function() return completion.stats.responses > before.responses end, 60000)
  server.cancel = cancel
  H.sleep(100)
  H.check('a request was sent and answered', completion.stats.requests == before.requests + 1
    and completion.stats.responses == before.responses + 1, completion.stats)
  H.check('the answer is counted stale', completion.stats.stale == before.stale + 1, completion.stats)
  H.check('a stale answer is not shown', ghost.text(buf) == nil, ghost.text(buf))

  -- The adaptive debounce measured the answered automatic requests, and stays within the setting.
  local debounce = require('tealtab.debounce')
  local estimate, count = debounce.estimate()
  H.check('answered automatic requests are measured', completion.stats.measured >= 1 and count >= 1
    and type(estimate) == 'number' and estimate > 0, { stats = completion.stats, estimate = estimate })
  H.check('the debounce stays within the setting', completion.debounce_ms() <= 50
    and completion.debounce_ms() >= math.min(50, debounce.FLOOR_MS), debounce.describe())
  H.note('debounce', debounce.describe())

  local s = status()
  H.check('status reports a latency', s and type(s.lastLatencyMs) == 'number', s)
  H.check('status shows the debounce', require('tealtab.commands').format_status(s):find('debounce %d+ ms') ~= nil)
  H.note('status', require('tealtab.commands').format_status(s))
  H.note('stats', completion.stats)
  vim.api.nvim_input('<Esc>')
end, 300)
