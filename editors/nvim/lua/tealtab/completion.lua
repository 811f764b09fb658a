---@mod tealtab.completion Requests, candidates, and what the accept keys insert.
---
--- One state per buffer. A request remembers the buffer's changedtick and the
--- cursor; its answer is dropped when either has changed or a newer request
--- was sent (stale). Candidates are kept relative to the cursor: `text` is
--- what the ghost text shows, `after` the text after the cursor that the
--- item's range replaces.
---
--- Automatic requests wait the adaptive debounce (tealtab.debounce); the
--- answered ones feed its latency estimate. Accepting sends
--- `tealtab/didAccept` / `tealtab/didPartialAccept` after the insertion, with
--- the cursor `position` and the buffer `version` it ended at: the server may
--- start on the next completion there (prefetch).

local config = require('tealtab.config')
local debounce = require('tealtab.debounce')
local ghost = require('tealtab.ghost')
local server = require('tealtab.server')

local api = vim.api
local has_011 = vim.fn.has('nvim-0.11') == 1

local M = {}

---Counters, for `:TealTab status` and tests.
M.stats = { requests = 0, responses = 0, stale = 0, shown = 0, accepted = 0, measured = 0 }

---@class tealtab.Candidate
---@field text string what follows the cursor (shown as ghost text)
---@field after string buffer text after the cursor that accepting replaces
---@field index integer position in the server's list (0-based)

---@class tealtab.BufState
---@field seq integer number of the latest request
---@field pending? {client: vim.lsp.Client, id: integer}
---@field timer? uv.uv_timer_t
---@field candidates? tealtab.Candidate[]
---@field index integer
---@field row integer cursor row (1-based) the candidates belong to
---@field col integer cursor byte column (0-based)
---@field tick integer changedtick the candidates belong to
---@field latency_ms? number
---@field shown table<integer, boolean> candidates already reported as shown

---@type table<integer, tealtab.BufState>
local states = {}

M.enabled = true

local function state(bufnr)
  local st = states[bufnr]
  if not st then
    st = { seq = 0, index = 1, row = 0, col = 0, tick = -1, shown = {} }
    states[bufnr] = st
  end
  return st
end

local function in_insert_mode()
  return api.nvim_get_mode().mode:sub(1, 1) == 'i'
end

local function cursor()
  local pos = api.nvim_win_get_cursor(0)
  return pos[1], pos[2]
end

---The params of a notification about the candidate on screen (nil when none or when not logging).
local function report_params(bufnr, st, extra)
  if not config.options.log_acceptance then
    return nil
  end
  local cand = st.candidates and st.candidates[st.index]
  if not cand then
    return nil
  end
  return vim.tbl_extend('force', {
    uri = vim.uri_from_bufnr(bufnr),
    languageId = vim.bo[bufnr].filetype,
    index = cand.index,
    count = #st.candidates,
    length = vim.fn.strchars(cand.text),
  }, extra or {})
end

local function report(method, bufnr, st, extra)
  local params = report_params(bufnr, st, extra)
  local client = params and server.client(bufnr)
  if client then
    server.notify(client, method, params)
  end
end

---Send an accept notification once the accepted text is in the buffer and the cursor after it:
---`position` is that cursor (in the client's position encoding) and `version` the buffer's
---LSP version (the one of the didChange that carries the insertion). `client:notify()` flushes
---the client's pending (debounced) didChange first, so the server has the text at `position`
---when this arrives.
local function report_accept(method, bufnr, params)
  local client = params and server.client(bufnr)
  if not client or api.nvim_get_current_buf() ~= bufnr then
    return
  end
  local encoding = client.offset_encoding or 'utf-16'
  params.position = vim.lsp.util.make_position_params(0, encoding).position
  params.version = vim.lsp.util.buf_versions[bufnr]
  server.notify(client, method, params)
end

---Byte column of an LSP position in `bufnr`.
local function byte_col(bufnr, pos, encoding)
  local line = api.nvim_buf_get_lines(bufnr, pos.line, pos.line + 1, false)[1] or ''
  if encoding == 'utf-8' then
    return math.min(pos.character, #line)
  end
  local ok, col
  if has_011 then
    ok, col = pcall(vim.str_byteindex, line, encoding, pos.character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, pos.character, encoding == 'utf-16')
  end
  return ok and col or #line
end

local function before(a_row, a_col, b_row, b_col)
  return a_row < b_row or (a_row == b_row and a_col <= b_col)
end

local function get_text(bufnr, srow, scol, erow, ecol)
  return table.concat(api.nvim_buf_get_text(bufnr, srow, scol, erow, ecol, {}), '\n')
end

---Turn the server's items into candidates relative to the cursor (0-based row).
local function candidates_from(bufnr, items, encoding, row, col)
  local result, seen = {}, {}
  for i, item in ipairs(items) do
    local insert = item.insertText
    if type(insert) == 'table' then
      insert = insert.value -- a snippet: shown and inserted as plain text
    end
    if type(insert) == 'string' then
      local srow, scol, erow, ecol = row, col, row, col
      if item.range then
        srow, erow = item.range.start.line, item.range['end'].line
        scol = byte_col(bufnr, item.range.start, encoding)
        ecol = byte_col(bufnr, item.range['end'], encoding)
      end
      if before(srow, scol, row, col) then
        local typed = get_text(bufnr, srow, scol, row, col)
        local after = before(erow, ecol, row, col) and '' or get_text(bufnr, row, col, erow, ecol)
        local text = insert:sub(#typed + 1)
        if insert:sub(1, #typed) == typed and text ~= '' and not seen[text] then
          seen[text] = true
          result[#result + 1] = { text = text, after = after, index = i - 1 }
        end
      end
    end
  end
  return result
end

local function render(bufnr, st)
  local cand = st.candidates and st.candidates[st.index]
  if not cand then
    ghost.hide(bufnr)
    return
  end
  ghost.show(bufnr, st.row - 1, st.col, cand.text, config.options.hl_group)
  M.stats.shown = M.stats.shown + 1
  if not st.shown[st.index] then
    st.shown[st.index] = true
    report('tealtab/didShow', bufnr, st, { latencyMs = st.latency_ms })
  end
end

local function cancel_pending(st)
  local pending = st.pending
  st.pending = nil
  if pending and not pending.client:is_stopped() then
    pcall(server.cancel, pending.client, pending.id)
  end
end

---Hide the ghost text and forget the candidates; an answer still on its way is dropped.
---@param bufnr? integer
function M.clear(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = states[bufnr]
  if not st then
    return
  end
  st.seq = st.seq + 1
  cancel_pending(st)
  if st.timer then
    st.timer:stop()
  end
  st.candidates = nil
  st.shown = {}
  ghost.hide(bufnr)
end

local function on_response(bufnr, seq, tick, row, col, started, encoding, automatic, err, result)
  M.stats.responses = M.stats.responses + 1
  local latency_ms = (vim.uv.hrtime() - started) / 1e6
  if not api.nvim_buf_is_valid(bufnr) then
    return
  end
  local st = state(bufnr)
  if seq ~= st.seq then
    M.stats.stale = M.stats.stale + 1 -- a newer request was sent, or the state was cleared
    return
  end
  if automatic and not err then
    -- Answered, neither cancelled nor superseded: a measurement of the server's latency.
    debounce.record(latency_ms)
    M.stats.measured = M.stats.measured + 1
  end
  st.pending = nil
  local now_row, now_col = cursor()
  if api.nvim_buf_get_changedtick(bufnr) ~= tick or api.nvim_get_current_buf() ~= bufnr
    or now_row ~= row or now_col ~= col or not in_insert_mode() then
    M.stats.stale = M.stats.stale + 1
    return
  end
  if err then
    vim.notify_once('tealtab: ' .. (err.message or vim.inspect(err)), vim.log.levels.DEBUG)
    return
  end
  local items = result and (result.items or result) or {}
  local cands = candidates_from(bufnr, items, encoding, row - 1, col)
  if #cands == 0 then
    return
  end
  st.candidates, st.index, st.shown = cands, 1, {}
  st.row, st.col, st.tick = row, col, tick
  st.latency_ms = latency_ms
  render(bufnr, st)
end

---Ask the server for candidates at the cursor now (no debounce).
---@param bufnr? integer
---@param invoked? boolean the user asked (trigger kind Invoked) rather than typing
function M.request(bufnr, invoked)
  bufnr = bufnr or api.nvim_get_current_buf()
  if not M.enabled or not api.nvim_buf_is_valid(bufnr) or api.nvim_get_current_buf() ~= bufnr
    or not in_insert_mode() then
    return
  end
  local client = server.client(bufnr)
  if not client then
    return
  end
  local st = state(bufnr)
  cancel_pending(st)
  st.seq = st.seq + 1
  local seq, tick = st.seq, api.nvim_buf_get_changedtick(bufnr)
  local row, col = cursor()
  local encoding = client.offset_encoding or 'utf-16'
  local params = vim.lsp.util.make_position_params(0, encoding)
  params.context = { triggerKind = invoked and 1 or 2 }
  local started = vim.uv.hrtime()
  M.stats.requests = M.stats.requests + 1
  local ok, id = server.request(client, 'textDocument/inlineCompletion', params, function(err, result)
    on_response(bufnr, seq, tick, row, col, started, encoding, not invoked, err, result)
  end, bufnr)
  if ok and id then
    st.pending = { client = client, id = id }
  end
end

---The wait before an automatic request now (adaptive, at most `debounce_ms`).
---@return integer
function M.debounce_ms()
  return debounce.current()
end

---Request after the debounce without typing.
---@param bufnr integer
function M.schedule(bufnr)
  if not M.enabled or not config.options.auto_trigger then
    return
  end
  local st = state(bufnr)
  st.timer = st.timer or vim.uv.new_timer()
  st.timer:stop()
  st.timer:start(debounce.current(), 0, vim.schedule_wrap(function()
    M.request(bufnr)
  end))
end

---Whether the buffer is exactly as the shown candidates expect (our own edit included).
local function current(bufnr, st)
  local row, col = cursor()
  return st.candidates ~= nil and api.nvim_buf_get_changedtick(bufnr) == st.tick
    and row == st.row and col == st.col
end

---TextChangedI / CursorMovedI: a new position means a new request.
---@param bufnr integer
function M.on_edit(bufnr)
  local st = state(bufnr)
  if current(bufnr, st) then
    return
  end
  M.clear(bufnr)
  M.schedule(bufnr)
end

---The candidate on screen, if any.
---@param bufnr? integer
---@return tealtab.Candidate?, integer index, integer count
function M.visible(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local st = states[bufnr]
  if not st or not current(bufnr, st) then
    return nil, 0, 0
  end
  return st.candidates[st.index], st.index, #st.candidates
end

---Insert `lines` at the cursor, replacing `after` when the buffer still has it; cursor to the end.
local function insert(bufnr, st, text, after)
  local row, col = st.row - 1, st.col
  local erow, ecol = row, col
  if after ~= '' then
    local parts = vim.split(after, '\n', { plain = true })
    local last_row = row + #parts - 1
    local last_col = (#parts == 1 and col or 0) + #parts[#parts]
    if last_row < api.nvim_buf_line_count(bufnr) and pcall(function()
      assert(get_text(bufnr, row, col, last_row, last_col) == after)
    end) then
      erow, ecol = last_row, last_col
    end
  end
  local lines = vim.split(text, '\n', { plain = true })
  api.nvim_buf_set_text(bufnr, row, col, erow, ecol, lines)
  local new_row = row + #lines
  local new_col = (#lines == 1 and col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { new_row, new_col })
  return new_row, new_col
end

local word_char = '[%w_\128-\255]'

---The next word of `text`: leading blanks and one word, or one run of punctuation.
---@param text string
---@return string
function M.next_word(text)
  return text:match('^\n[ \t]*') or text:match('^[ \t]*' .. word_char .. '+')
    or text:match('^[ \t]*[^%w_\128-\255%s]+') or text:match('^%s+') or text
end

---The rest of the current line of `text`, or the next line when `text` starts with a line break.
---@param text string
---@return string
function M.next_line(text)
  return text:match('^\n[^\n]*') or text:match('^[^\n]+') or text
end

---Accept the candidate on screen: `"all"`, `"word"` or `"line"`. False when nothing is shown.
---@param kind? "all"|"word"|"line"
---@param bufnr? integer
---@return boolean
function M.accept(kind, bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  kind = kind or 'all'
  local cand = M.visible(bufnr)
  if not cand then
    return false
  end
  local st = states[bufnr]
  local piece = cand.text
  if kind == 'word' then
    piece = M.next_word(cand.text)
  elseif kind == 'line' then
    piece = M.next_line(cand.text)
  end
  M.stats.accepted = M.stats.accepted + 1
  local latency = st.latency_ms and math.floor(st.latency_ms + 0.5) or nil
  if piece == cand.text then
    local params = report_params(bufnr, st, { acceptedLength = vim.fn.strchars(piece), latencyMs = latency })
    M.clear(bufnr)
    -- After our own edit the state is clean: the next edit requests again.
    st.row, st.col = insert(bufnr, st, piece, cand.after)
    st.tick = api.nvim_buf_get_changedtick(bufnr)
    report_accept('tealtab/didAccept', bufnr, params)
    return true
  end
  local params = report_params(bufnr, st, { kind = kind, acceptedLength = vim.fn.strchars(piece), latencyMs = latency })
  -- Keep the candidates that agree with what was accepted, minus that part.
  local kept, index = {}, 1
  for i, other in ipairs(st.candidates) do
    if other.text:sub(1, #piece) == piece and #other.text > #piece then
      kept[#kept + 1] = { text = other.text:sub(#piece + 1), after = other.after, index = other.index }
      if i == st.index then
        index = #kept
      end
    end
  end
  ghost.hide(bufnr)
  st.row, st.col = insert(bufnr, st, piece, '')
  st.tick = api.nvim_buf_get_changedtick(bufnr)
  report_accept('tealtab/didPartialAccept', bufnr, params)
  st.candidates, st.index = kept, index
  render(bufnr, st)
  return true
end

---Show the next (`step` 1) or previous (`step` -1) candidate, wrapping around.
---@param step integer
---@param bufnr? integer
---@return boolean
function M.cycle(step, bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local cand, index, count = M.visible(bufnr)
  if not cand then
    return false
  end
  local st = states[bufnr]
  st.index = (index - 1 + step) % count + 1
  render(bufnr, st)
  return true
end

---Dismiss the ghost text. False when nothing was shown.
---@param bufnr? integer
---@return boolean
function M.dismiss(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  local shown = M.visible(bufnr) ~= nil
  M.clear(bufnr)
  return shown
end

---Forget a buffer (BufUnload).
---@param bufnr integer
function M.detach(bufnr)
  local st = states[bufnr]
  if st then
    M.clear(bufnr)
    if st.timer then
      st.timer:close()
    end
    states[bufnr] = nil
  end
end

return M
