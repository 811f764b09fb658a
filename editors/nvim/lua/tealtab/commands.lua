---@mod tealtab.commands :TealTab {status|toggle|enable|disable|restart|model NAME|log}

local M = {}

local function say(message, level)
  vim.notify(message, level or vim.log.levels.INFO, { title = 'tealtab' })
end

---One line describing a `tealtab/status` result.
---@param status tealtab.Status
---@return string
function M.format_status(status)
  local parts = { 'tealtab: ' .. tostring(status.state) }
  if status.model and status.model ~= vim.NIL then
    parts[#parts + 1] = 'model ' .. status.model
  end
  if status.device and status.device ~= vim.NIL then
    parts[#parts + 1] = 'on ' .. status.device
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
      say(M.format_status(status))
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
