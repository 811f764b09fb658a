---@mod tealtab.health :checkhealth tealtab

local M = {}

local health = vim.health

---The Python interpreter behind the server command (a console script's shebang).
local function python_of(cmd)
  local exe = vim.fn.exepath(cmd[1])
  if exe == '' then
    return nil
  end
  if cmd[1]:match('python[%d.]*$') then
    return exe
  end
  local file = io.open(exe, 'r')
  local first = file and file:read('*l') or ''
  if file then
    file:close()
  end
  return first:match('^#!%s*(%S*python[%d.]*)') or vim.fn.exepath('python3')
end

local function status_of(request, timeout_ms)
  local done, result
  request(function(err, status)
    done, result = true, err and { error = err } or status
  end)
  vim.wait(timeout_ms, function()
    return done
  end, 50)
  return result
end

---A remote model's endpoint: reachable, unreachable (with the error and the retry) or not tried yet.
local function report_remote(remote)
  local line = require('tealtab.commands').format_remote(remote)
  if not line then
    return
  end
  if remote.reachable == true then
    health.ok(line)
  elseif remote.reachable == false then
    health.warn(line, {
      'check that the remote server runs and that the URL in settings.model is right',
      'with an API key: settings.apiKeyEnv is the name of an environment variable (never the key) set where Neovim starts',
    })
  else
    health.info(line)
  end
end

local function report_status(status)
  if not status then
    health.warn('the server did not answer tealtab/status in time')
    return
  end
  local model = require('tealtab.commands').shown_model(status.model) -- an endpoint without credentials
  if status.state == 'ready' and type(status.remote) == 'table' then
    health.ok(('model %s ready'):format(model))
  elseif status.state == 'ready' then
    health.ok(('model %s ready on %s'):format(model, status.device))
  elseif status.state == 'error' then
    health.error('the model failed to load: ' .. tostring(status.error))
  else
    health.warn(('server state %s (model %s, device %s)'):format(status.state, tostring(model),
      tostring(status.device)))
  end
  report_remote(status.remote)
end

---Start a throwaway server, wait (bounded) for its model, and ask its status.
local function probe(cmd, settings)
  local dispatchers = {
    server_request = function()
      return nil, nil
    end,
  }
  local ok, rpc = pcall(vim.lsp.rpc.start, cmd, dispatchers)
  if not ok or not rpc then
    health.error('could not start ' .. table.concat(cmd, ' ') .. ': ' .. tostring(rpc))
    return
  end
  local init = status_of(function(cb)
    rpc.request('initialize', {
      processId = vim.fn.getpid(),
      capabilities = {},
      clientInfo = { name = 'tealtab-health' },
      initializationOptions = settings,
    }, cb)
  end, 15000)
  if not init or init.error then
    health.error('the server did not initialize: ' .. vim.inspect(init and init.error))
    rpc.terminate()
    return
  end
  health.ok(('%s %s starts and answers'):format(init.serverInfo.name, init.serverInfo.version or ''))
  if not init.capabilities.inlineCompletionProvider then
    health.error('the server does not advertise inlineCompletionProvider')
  end
  rpc.notify('initialized', vim.empty_dict())
  local status
  local deadline = vim.uv.now() + 60000
  while true do
    status = status_of(function(cb)
      rpc.request('tealtab/status', vim.empty_dict(), cb)
    end, 5000)
    if not status or status.error or status.state ~= 'loading' or vim.uv.now() > deadline then
      break
    end
    vim.wait(500)
  end
  report_status(status and not status.error and status or nil)
  status_of(function(cb)
    rpc.request('shutdown', nil, cb)
  end, 5000)
  rpc.notify('exit', nil)
  vim.wait(2000, function()
    return rpc.is_closing()
  end, 50)
  rpc.terminate()
end

function M.check()
  local config = require('tealtab.config').options
  health.start('tealtab')
  if vim.fn.has('nvim-0.10') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim 0.10 or later is needed')
  end

  local exe = vim.fn.exepath(config.cmd[1])
  if exe == '' then
    health.error(config.cmd[1] .. ' not found', { 'pip install tealtab, or set cmd in setup()' })
    return
  end
  health.ok('server command: ' .. table.concat(config.cmd, ' ') .. ' (' .. exe .. ')')

  local python = python_of(config.cmd)
  if not python or vim.fn.executable(python) == 0 then
    health.warn('no Python interpreter found for ' .. exe)
  else
    health.ok('Python: ' .. python)
    local result = vim.system({ python, '-c',
      'import tealtab.lsp, tealtab.engine.loading as l; print(l.cache_dir())' }, { text = true }):wait(30000)
    if result.code == 0 then
      health.ok('tealtab importable; model cache ' .. vim.trim(result.stdout))
    else
      health.error('import tealtab failed: ' .. vim.trim(result.stderr or ''))
    end
  end

  health.info(require('tealtab.debounce').describe())
  local server = require('tealtab.server')
  if server.client() then
    health.ok('a tealtab server is running')
    report_status(status_of(server.status, 5000))
  else
    probe(config.cmd, config.settings)
  end
end

return M
