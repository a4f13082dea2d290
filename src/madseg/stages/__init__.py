"""Thin DVC stage entry points: read params and paths, call the library, write results atomically."""
