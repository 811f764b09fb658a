-- tealtab: local code completion as ghost text. This file only defines the
-- :TealTab command and the FileType autocmd; everything else loads lazily.
if vim.g.loaded_tealtab then
  return
end
vim.g.loaded_tealtab = true

if vim.fn.has('nvim-0.10') == 0 then
  vim.notify('tealtab needs Neovim 0.10 or later', vim.log.levels.WARN)
  return
end

local subcommands = { 'status', 'toggle', 'enable', 'disable', 'restart', 'model', 'log' }

vim.api.nvim_create_user_command('TealTab', function(opts)
  require('tealtab.commands').run(opts.fargs)
end, {
  nargs = '+',
  desc = 'tealtab: status | toggle | enable | disable | restart | model NAME | log',
  complete = function(arglead, cmdline)
    if cmdline:match('^%s*%S+%s+%S*$') then
      return vim.tbl_filter(function(name)
        return vim.startswith(name, arglead)
      end, subcommands)
    end
    return {}
  end,
})

vim.api.nvim_create_autocmd('FileType', {
  group = vim.api.nvim_create_augroup('tealtab', { clear = true }),
  desc = 'tealtab: start the server for configured filetypes',
  callback = function(args)
    require('tealtab').attach(args.buf)
  end,
})
