"""HTTP handlers, one module per group of routes: page, one-shot uploads, tus, files."""
