"""Symbolic search engines: the native evolutionary engine (default) and the PySR backend."""
