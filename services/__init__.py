"""What the features (`handlers/`) and the jobs (`scheduler/`) share: sending through the
outbox, texts and i18n, middlewares and filters, the trust boundary, the check-in board,
presses answered from memory, and what counts as Telegram's or the database's weather.

Below `handlers/` and `scheduler/`, above `storage/` (see the import contract in
`pyproject.toml`)."""
