"""File formats: atomic writes, images, palette-PNG masks, tables, the sharded prediction store."""
