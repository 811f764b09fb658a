---@mod tealtab.server Starting, finding, configuring and restarting the language server.

local config = require('tealtab.config')

local M = {}

M.name = 'tealtab'

local has_011 = vim.fn.has('nvim-0.11') == 1

---Send a request; works with the 0.10 (`client.request`) and 0.11+ (`client:request`) APIs.
---@param client vim.lsp.Client
---@param method string
---@param params any
---@param handler fun(err: lsp.ResponseError?, result: any)
---@param bufnr? integer
---@return boolean ok, integer? request_id
function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

---@param client vim.lsp.Client
---@param method string
---@param params any
function M.notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

---@param client vim.lsp.Client
---@param id integer
function M.cancel(client, id)
  if has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

---The running tealtab client, if any.
---@param bufnr? integer only a client attached to this buffer
---@return vim.lsp.Client?
function M.client(bufnr)
  local clients = vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
  for _, client in ipairs(clients) do
    if not client:is_stopped() then
      return client
    end
  end
end

---The settings object sent to the server.
---@return table<string, any>
function M.settings()
  return vim.deepcopy(config.options.settings)
end

---Whether tealtab serves buffers of this filetype.
---@param filetype string
---@return boolean
function M.serves(filetype)
  return vim.tbl_contains(config.options.filetypes, filetype)
end

---Start (or reuse) the server for `bufnr`. One server serves every buffer.
---@param bufnr integer
---@return integer? client_id
function M.start(bufnr)
  local opts = config.options
  if vim.fn.executable(opts.cmd[1]) == 0 then
    vim.notify_once(('tealtab: %s not found; see :checkhealth tealtab'):format(opts.cmd[1]), vim.log.levels.WARN)
    return nil
  end
  local settings = M.settings()
  local root = vim.fs.root(bufnr, opts.root_markers) or vim.fn.getcwd()
  return vim.lsp.start({
    name = M.name,
    cmd = opts.cmd,
    root_dir = root,
    init_options = settings,
    -- Neovim sends this once initialized (workspace/didChangeConfiguration).
    settings = { tealtab = settings },
  }, {
    bufnr = bufnr,
    reuse_client = function(client, conf)
      return client.name == conf.name and not client:is_stopped()
    end,
  })
end

---Send the current settings to the running server.
function M.push_settings()
  local client = M.client()
  if client then
    client.settings = { tealtab = M.settings() }
    M.notify(client, 'workspace/didChangeConfiguration', { settings = client.settings })
  end
end

---Stop the server and start it again for every buffer it served.
---@param on_done? fun(client_id: integer?)
function M.restart(on_done)
  require('tealtab.debounce').reset()
  local buffers = {}
  for _, client in ipairs(vim.lsp.get_clients({ name = M.name })) do
    for bufnr in pairs(client.attached_buffers) do
      buffers[#buffers + 1] = bufnr
    end
    client:stop(true)
  end
  vim.wait(5000, function()
    return #vim.lsp.get_clients({ name = M.name }) == 0
  end, 20)
  local id
  for _, bufnr in ipairs(buffers) do
    if vim.api.nvim_buf_is_valid(bufnr) then
      id = M.start(bufnr) or id
    end
  end
  if on_done then
    on_done(id)
  end
end

---Ask the server for `tealtab/status`.
---@param callback fun(err: string?, status: tealtab.Status?)
function M.status(callback)
  local client = M.client()
  if not client then
    callback('tealtab is not running', nil)
    return
  end
  M.request(client, 'tealtab/status', vim.empty_dict(), function(err, result)
    callback(err and (err.message or vim.inspect(err)) or nil, result)
  end)
end

---@class tealtab.Status
---@field state "loading"|"ready"|"error"|"disabled"
---@field model string?
---@field device string?
---@field lastLatencyMs number?
---@field error string?
---@field sparsity table? `{ requested = "auto"|number, level = number?, levels = number[]?, calibrating = boolean, ... }`
---@field remote tealtab.RemoteStatus? nil (or vim.NIL) for a local model

---@class tealtab.RemoteStatus
---@field endpoint string The `model` setting without credentials, e.g. `openai:http://host:8000/v1`.
---@field model string? The served model name in use (nil: the server's default, its only or first).
---@field reachable boolean? nil: not tried yet.
---@field lastLatencyMs number?
---@field lastError string?
---@field retryInS number? Seconds until requests are tried again after failures.

return M
