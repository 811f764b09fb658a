-- Test harness for scripts run as `nvim --headless --clean -c "luafile SCRIPT"`.
--
-- The test body runs in a coroutine while Neovim sits in Insert mode, so typed
-- keys (nvim_input) go through the real input loop and fire TextChangedI and
-- CursorMovedI. wait() yields back to that loop; every wait is bounded. The
-- results go to $TEALTAB_RESULT as JSON; Neovim exits 0 when the body
-- finished, 1 on an error or when the whole script runs past its limit.
local H = {}

H.result = { checks = {}, notes = {} }
local co

local function write_result()
  local file = assert(io.open(os.getenv('TEALTAB_RESULT'), 'w'))
  file:write(vim.json.encode(H.result))
  file:close()
end

local function finish(code)
  write_result()
  vim.schedule(function()
    vim.cmd((code == 0 and 'qall!' or 'cquit! ' .. code))
  end)
end

local function resume(...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then
    H.result.error = debug.traceback(co, tostring(err))
    finish(1)
  elseif coroutine.status(co) == 'dead' then
    finish(0)
  end
end

---Wait until `cond()` is truthy (polled every 20 ms) or `timeout_ms` passed; its value or nil.
function H.wait(cond, timeout_ms)
  local deadline = vim.uv.now() + timeout_ms
  while true do
    local value = cond()
    if value then
      return value
    end
    if vim.uv.now() >= deadline then
      return nil
    end
    vim.defer_fn(resume, 20)
    coroutine.yield()
  end
end

---Sleep `ms` milliseconds, letting Neovim process input.
function H.sleep(ms)
  H.wait(function() return false end, ms)
end

---Record a named check; a failed one makes the test fail with `detail`.
function H.check(name, ok, detail)
  H.result.checks[name] = { ok = ok and true or false, detail = detail and vim.inspect(detail) or nil }
  return ok
end

function H.note(name, value)
  H.result.notes[name] = value
end

---Type keys (Neovim key notation) through the input loop and let them be processed.
function H.type(keys)
  vim.api.nvim_input(keys)
  H.sleep(30)
end

function H.lines(bufnr)
  return vim.api.nvim_buf_get_lines(bufnr or 0, 0, -1, false)
end

---Run `body` in Insert mode; exits Neovim when it ends. `limit_s` bounds the whole run.
function H.run(body, limit_s)
  local limit = vim.uv.new_timer()
  limit:start(limit_s * 1000, 0, vim.schedule_wrap(function()
    H.result.error = ('the test ran past %d s'):format(limit_s)
    finish(2)
  end))
  co = coroutine.create(body)
  vim.schedule(resume)
  -- Blocks in Insert mode until the body ends and quits Neovim.
  vim.api.nvim_feedkeys('i', 'tx!', false)
end

return H
