---@mod tealtab.commands :TealTab {status|toggle|enable|disable|restart|model NAME|log}

local M = {}

local function say(message, level)
  vim.notify(message, level or vim.log.levels.INFO, { title = 'tealtab' })
end

local function given(value)
  return value ~= nil and value ~= vim.NIL
end

local remote_kinds = { openai = true, llamacpp = true, ollama = true }

---A remote endpoint (`openai:URL`, `llamacpp:URL`, `ollama:URL`) without its credentials
---(user:password@) and query; any other model as it is. Nil for nil.
---@param model string|nil
---@return string? shown
---@return boolean remote
function M.shown_model(model)
  if not given(model) then
    return nil, false
  end
  local kind, url = tostring(model):match('^(%a+):(.*)$')
  if not (kind and remote_kinds[kind:lower()]) then
    return model, false
  end
  url = url:gsub('^(%a+://)[^/?#]*@', '%1')
  url = url:gsub('[?#].*$', '')
  return kind .. ':' .. url, true
end

---The remote endpoint's part of a status, e.g. `remote openai:http://gpu-box:8000/v1 (served model:
---Qwen/Qwen2.5-Coder-1.5B) reachable, last request 85 ms`; nil for a local model.
---@param remote tealtab.RemoteStatus|nil
---@return string?
function M.format_remote(remote)
  if type(remote) ~= 'table' then
    return nil
  end
  local text = ('remote %s (served model: %s)'):format(tostring(remote.endpoint),
    given(remote.model) and remote.model or "the server's default")
  if remote.reachable == true then
    text = text .. ' reachable'
  elseif remote.reachable == false then
    text = text .. ' UNREACHABLE'
  else
    text = text .. ' not tried yet'
  end
  if type(remote.lastLatencyMs) == 'number' then
    text = text .. (', last request %.0f ms'):format(remote.lastLatencyMs)
  end
  if type(remote.lastError) == 'string' then
    text = text .. ', last error: ' .. remote.lastError
  end
  if type(remote.retryInS) == 'number' then
    text = text .. (', retrying in %d s'):format(math.ceil(remote.retryInS))
  end
  return text
end

---One line describing a `tealtab/status` result.
---@param status tealtab.Status
---@return string
function M.format_status(status)
  local parts = { 'tealtab: ' .. tostring(status.state) }
  local remote = M.format_remote(status.remote)
  if remote then
    parts[#parts + 1] = remote
  else
    local model, remote_model = M.shown_model(status.model)
    if model then
      parts[#parts + 1] = 'model ' .. model
    end
    if given(status.device) and not remote_model then -- a remote endpoint not serving (yet): no device
      parts[#parts + 1] = 'on ' .. status.device
    end
  end
  if type(status.lastLatencyMs) == 'number' then
    parts[#parts + 1] = ('last completion %.0f ms'):format(status.lastLatencyMs)
  end
  local sparsity = status.sparsity
  if type(sparsity) == 'table' and type(sparsity.level) == 'number' then
    local text = ('sparsity %g (setting %s'):format(sparsity.level, tostring(sparsity.requested))
    if type(sparsity.levels) ~= 'table' or #sparsity.levels == 0 then
      text = text .. ', not calibrated'
    end
    if sparsity.calibrating == true then
      text = text .. ', calibrating'
    end
    parts[#parts + 1] = text .. ')'
  end
  if type(status.error) == 'string' then
    parts[#parts + 1] = 'error: ' .. status.error
  end
  parts[#parts + 1] = require('tealtab.debounce').describe()
  if not require('tealtab.completion').enabled then
    parts[#parts + 1] = '(off in this editor)'
  end
  return table.concat(parts, ', ')
end

local actions = {}

function actions.status()
  require('tealtab.server').status(function(err, status)
    if err then
      say('tealtab: ' .. err, vim.log.levels.WARN)
    else
      local unreachable = type(status.remote) == 'table' and status.remote.reachable == false
      say(M.format_status(status), unreachable and vim.log.levels.WARN or nil)
    end
  end)
end

function actions.toggle()
  local tealtab = require('tealtab')
  tealtab.enable(not tealtab.is_enabled())
  say('tealtab ' .. (tealtab.is_enabled() and 'on' or 'off'))
end

function actions.enable()
  require('tealtab').enable(true)
end

function actions.disable()
  require('tealtab').enable(false)
end

function actions.restart()
  require('tealtab.server').restart(function(id)
    say(id and 'tealtab restarted' or 'tealtab: no buffer to serve; open a file of a configured filetype')
  end)
end

function actions.model(name)
  if not name or name == '' then
    say('usage: :TealTab model NAME', vim.log.levels.ERROR)
    return
  end
  require('tealtab').set_model(name)
  say('tealtab: loading ' .. name)
end

function actions.log()
  vim.cmd.edit(vim.lsp.get_log_path())
end

---Run `:TealTab` with its arguments.
---@param args string[]
function M.run(args)
  local action = actions[args[1]]
  if not action then
    say(('tealtab: unknown command %q'):format(tostring(args[1])), vim.log.levels.ERROR)
    return
  end
  action(unpack(args, 2))
end

return M
