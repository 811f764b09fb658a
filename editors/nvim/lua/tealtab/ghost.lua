---@mod tealtab.ghost Ghost text: the first line inline at the cursor, the rest as virtual lines.

local M = {}

M.ns = vim.api.nvim_create_namespace('tealtab.ghost')

local function display(line)
  local spaces = string.rep(' ', vim.bo.tabstop > 0 and vim.bo.tabstop or 8)
  return (line:gsub('\t', spaces))
end

---Show `text` at (`row`, `col`) (0-based row, byte column) in `bufnr`.
---@param bufnr integer
---@param row integer
---@param col integer
---@param text string
---@param hl_group string
---@return integer extmark_id
function M.show(bufnr, row, col, text, hl_group)
  M.hide(bufnr)
  local lines = vim.split(text, '\n', { plain = true })
  -- Inline text pushes what follows the cursor to the right; at the end of the
  -- line there is nothing to push, and an overlay keeps the cursor drawn at the
  -- start of the ghost text instead of after it.
  local current = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  local opts = {
    virt_text = { { display(lines[1]), hl_group } },
    virt_text_pos = col >= #current and 'overlay' or 'inline',
    hl_mode = 'combine',
    right_gravity = false,
  }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      opts.virt_lines[#opts.virt_lines + 1] = { { display(lines[i]), hl_group } }
    end
  end
  return vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, opts)
end

---Remove the ghost text from `bufnr`.
---@param bufnr integer
function M.hide(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

---The text shown in `bufnr` (nil when none), read back from the extmarks.
---@param bufnr integer
---@return string?
function M.text(bufnr)
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local details = marks[1][4]
  local lines = { details.virt_text and details.virt_text[1][1] or '' }
  for _, chunks in ipairs(details.virt_lines or {}) do
    lines[#lines + 1] = chunks[1] and chunks[1][1] or ''
  end
  return table.concat(lines, '\n')
end

return M
