"""Textual dashboard (``gpuwarden top``); reads only the collector's query API."""
