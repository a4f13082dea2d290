"""The per-round HTML report: self-contained pages (inline SVG charts, local image files), no network."""
