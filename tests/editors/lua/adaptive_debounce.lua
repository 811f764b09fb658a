-- The adaptive debounce (lua/tealtab/debounce.lua) without a server: the rule itself, the
-- options and their validation, and that the plugin's timer really waits the adaptive value.
-- Environment: TEALTAB_PLUGIN_DIR, TEALTAB_RESULT.
local H = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), 'harness.lua'))

vim.opt.rtp:prepend(os.getenv('TEALTAB_PLUGIN_DIR'))
vim.cmd.runtime('plugin/tealtab.lua')
local tealtab = require('tealtab')
local config = require('tealtab.config')
local debounce = require('tealtab.debounce')
local completion = require('tealtab.completion')

-- Options and validation.
H.check('adaptive by default', config.defaults.adaptive_debounce == true)
H.check('setup rejects a non-boolean adaptive_debounce', not pcall(tealtab.setup, { adaptive_debounce = 'yes' }))
H.check('setup rejects a negative debounce_ms', not pcall(tealtab.setup, { debounce_ms = -1 }))
tealtab.setup({ filetypes = {}, debounce_ms = 150 })

-- The rule: min(setting, max(floor, factor * median)).
debounce.reset()
H.check('no answer yet: the setting', debounce.current() == 150 and debounce.estimate() == nil, debounce.describe())
H.check('describe before answers', debounce.describe():match('^debounce 150 ms %(adaptive, no answer measured yet') ~= nil,
  debounce.describe())
for _ = 1, debounce.WINDOW do
  debounce.record(40)
end
H.check('fast answers shrink it below the setting', debounce.current() == 60 and debounce.current() < 150,
  debounce.describe())
for _ = 1, debounce.WINDOW do
  debounce.record(3) -- typed-ahead cache hits
end
H.check('never below the floor', debounce.current() == debounce.FLOOR_MS, debounce.describe())
H.check('describe with answers',
  debounce.describe() == 'debounce 30 ms (adaptive: median latency 3 ms of 10 answers; setting 150 ms)', debounce.describe())
for _, latency in ipairs({ 400, 900, 3000, 250, 600 }) do
  debounce.record(latency)
end
H.check('slow answers: the setting', debounce.current() == 150, debounce.describe())
-- The window now holds five answers of 3 ms and the five slow ones: the median is (3 + 250) / 2.
H.check('the median of the last WINDOW', debounce.estimate() == 126.5, { debounce.estimate() })
debounce.reset()
for _, latency in ipairs({ 20, 20, 20, 5000, 20 }) do
  debounce.record(latency)
end
H.check('one outlier does not count', debounce.estimate() == 20, { debounce.estimate() })
for _ = 1, debounce.WINDOW do
  debounce.record(100)
end
local estimate, count = debounce.estimate()
H.check('only the last WINDOW answers count', estimate == 100 and count == debounce.WINDOW, { estimate, count })
debounce.record(0 / 0)
debounce.record(-1)
H.check('bad samples are ignored', select(2, debounce.estimate()) == debounce.WINDOW)

-- Never above the setting, for any latencies and settings.
local seed = 7
local function random()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 2147483648
end
local worst
for _ = 1, 500 do
  local samples = {}
  local setting = math.floor(random() * 2001)
  for _ = 1, math.floor(random() * 25) do
    samples[#samples + 1] = random() * 5000
    local value = debounce.compute(setting, debounce.median(samples), true)
    if value > setting or value < math.min(setting, debounce.FLOOR_MS) then
      worst = { setting = setting, value = value, samples = samples }
    end
  end
end
H.check('never above the setting nor below the floor', worst == nil, worst)
H.check('compute', debounce.compute(150, nil, true) == 150 and debounce.compute(150, 10, true) == 30
  and debounce.compute(150, 10, false) == 150 and debounce.compute(20, 10, true) == 20
  and debounce.compute(0, 10, true) == 0 and debounce.compute(2000, 400, true) == 600)

-- Off: the setting, whatever the answers.
tealtab.setup({ filetypes = {}, debounce_ms = 150, adaptive_debounce = false })
H.check('off: the setting', debounce.current() == 150 and debounce.describe() == 'debounce 150 ms (fixed)',
  debounce.describe())
H.check('status line shows the debounce', require('tealtab.commands').format_status({ state = 'ready' })
  :find('debounce 150 ms (fixed)', 1, true) ~= nil)

H.run(function()
  -- The plugin's timer waits the adaptive value: with a 2000 ms setting and fast answers,
  -- an automatic request goes out after about 30 ms; with adaptation off, not before 2000 ms.
  local buf = vim.api.nvim_get_current_buf()
  local fired = {}
  completion.request = function(bufnr)
    fired[#fired + 1] = { bufnr = bufnr, at = vim.uv.now() }
  end
  tealtab.setup({ filetypes = {}, debounce_ms = 2000 })
  debounce.reset()
  for _ = 1, debounce.WINDOW do
    debounce.record(10)
  end
  H.check('debounce_ms() follows the answers', completion.debounce_ms() == debounce.FLOOR_MS, completion.debounce_ms())
  local start = vim.uv.now()
  completion.schedule(buf)
  H.wait(function() return #fired > 0 end, 1500)
  H.check('adaptive: the request goes out long before the setting', #fired == 1 and fired[1].at - start < 1000,
    { fired = fired, start = start })
  H.note('adaptive_wait_ms', fired[1] and fired[1].at - start)

  fired = {}
  tealtab.setup({ filetypes = {}, debounce_ms = 600, adaptive_debounce = false })
  start = vim.uv.now()
  completion.schedule(buf)
  H.sleep(300)
  H.check('off: no request before the setting', #fired == 0, fired)
  H.wait(function() return #fired > 0 end, 2000)
  H.check('off: the request after the setting', #fired == 1 and fired[1].at - start >= 590, { fired = fired, start = start })
  vim.api.nvim_input('<Esc>')
end, 60)
