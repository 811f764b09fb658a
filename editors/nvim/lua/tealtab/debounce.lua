---@mod tealtab.debounce Adaptive debounce: the wait before an automatic request, from the server's latency.
---
--- A fixed debounce is a guess about the server. When the server answers in
--- 30 ms, waiting the full `debounce_ms` (150 by default) only adds that wait
--- to every completion. When it is slow, a short wait buys nothing: a request
--- sent while the user is still typing is typed over and cancelled before its
--- answer arrives, so the full debounce is the right one. Hence
---
---     debounce = min(debounce_ms, max(FLOOR_MS, FACTOR * estimated latency))
---
--- where the estimate is the median request-to-answer time of the last WINDOW
--- automatic requests that were answered (cancelled or superseded requests do
--- not count: they say nothing about how long an answer takes). `debounce_ms`
--- is always the upper bound; before the first answer, or with
--- `adaptive_debounce = false`, it is used as is. The median rather than a
--- mean, so that one slow outlier (the first request after a model load) does
--- not lengthen the next ten waits. The VS Code extension uses the same rule
--- and constants (editors/vscode/src/debounce.ts).

local M = {}

---The debounce is this many times the estimated latency...
M.FACTOR = 1.5
---...but never shorter than this (a burst of keystrokes is still one request)...
M.FLOOR_MS = 30
---...and never longer than `debounce_ms`. Answers the estimate is the median of:
M.WINDOW = 10

---@type number[] latencies (ms) of the last answered automatic requests, oldest first
local samples = {}

---The debounce for `setting_ms` given an estimated latency (nil: none measured yet).
---@param setting_ms number
---@param estimate_ms number?
---@param adaptive boolean?
---@return integer
function M.compute(setting_ms, estimate_ms, adaptive)
  local setting = (type(setting_ms) == 'number' and setting_ms > 0) and setting_ms or 0
  if adaptive == false or type(estimate_ms) ~= 'number' or estimate_ms ~= estimate_ms or estimate_ms < 0 then
    return setting
  end
  return math.min(setting, math.max(M.FLOOR_MS, math.floor(M.FACTOR * estimate_ms + 0.5)))
end

---The median of `values` (nil when empty).
---@param values number[]
---@return number?
function M.median(values)
  if #values == 0 then
    return nil
  end
  local sorted = vim.deepcopy(values)
  table.sort(sorted)
  local middle = math.floor(#sorted / 2)
  if #sorted % 2 == 1 then
    return sorted[middle + 1]
  end
  return (sorted[middle] + sorted[middle + 1]) / 2
end

---One answered automatic request took `latency_ms` from sending to its answer.
---@param latency_ms number
function M.record(latency_ms)
  if type(latency_ms) ~= 'number' or latency_ms ~= latency_ms or latency_ms < 0 then
    return
  end
  samples[#samples + 1] = latency_ms
  while #samples > M.WINDOW do
    table.remove(samples, 1)
  end
end

---Forget the measurements (another server or model answers at another speed).
function M.reset()
  samples = {}
end

---The median latency of the recorded answers (nil before the first) and how many there are.
---@return number?, integer
function M.estimate()
  return M.median(samples), #samples
end

---The wait before an automatic request now, from the options `debounce_ms` and `adaptive_debounce`.
---@return integer
function M.current()
  local options = require('tealtab.config').options
  return M.compute(options.debounce_ms, (M.estimate()), options.adaptive_debounce)
end

---`debounce 45 ms (adaptive: median latency 30 ms of 10 answers; setting 150 ms)`.
---@return string
function M.describe()
  local options = require('tealtab.config').options
  local current = M.current()
  if options.adaptive_debounce == false then
    return ('debounce %d ms (fixed)'):format(math.floor(current))
  end
  local estimate, count = M.estimate()
  if not estimate then
    return ('debounce %d ms (adaptive, no answer measured yet; setting %d ms)'):format(math.floor(current),
      math.floor(options.debounce_ms))
  end
  return ('debounce %d ms (adaptive: median latency %d ms of %d answer%s; setting %d ms)'):format(
    math.floor(current), math.floor(estimate + 0.5), count, count == 1 and '' or 's', math.floor(options.debounce_ms))
end

return M
